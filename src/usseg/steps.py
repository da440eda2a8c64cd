"""What a method declares about its steps, and the registry that collects the declarations.

Each method package ``usseg.methods.<name>`` holds a ``spec`` module that calls
``register_method`` (in the spirit of timm's ``register_model``). The workflow's helpers
(``usseg.jobplan``, ``workflow/rules/common.smk``), the CLI's command table, ``dvc.yaml``
and the MLflow lineage read these declarations; nothing else names a method's steps.
Spec modules import nothing heavy: ``usseg --help`` and Snakefile parsing load them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Artifacts a step may read besides the outputs of its method's other shared steps.
COMMON_INPUTS = ("prepared", "features", "weights")


@dataclass(frozen=True)
class Step:
    """One job kind of a method: the rule ``name`` runs ``usseg <command>``.

    ``keys`` are the keys of the method's params group the job reads (its typed parameters'
    fields): its output changes with them alone. A ``shared`` step's output sits under
    ``results/{method}/shared/{dataset}/{backbone}/{output}-{key}.zarr``, keyed by those
    parameters and its ``inputs`` (input name -> a ``COMMON_INPUTS`` artifact or another
    shared step's ``output``), so every experiment that agrees on both shares one job.
    ``when`` keeps an input only when its test of the experiment's params group holds (e.g.
    the weights of an embedding that re-forwards the ViT); ``file_params`` are inputs given as
    a file path in a key of that group (a user's checkpoint; none when empty). ``device``
    picks the step's own device setting when the job may use a GPU (None: never).
    """

    name: str
    command: str
    cli: str = ""  # the module registering ``command`` when another method's (default: this method's)
    keys: tuple[str, ...] = ()
    shared: bool = False
    output: str = ""
    inputs: Mapping[str, str] = field(default_factory=dict)
    when: Mapping[str, Callable[[Mapping[str, Any]], bool]] = field(default_factory=dict)
    file_params: Mapping[str, str] = field(default_factory=dict)
    device: Callable[[Mapping[str, Any]], str] | None = None

    def params(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The part of the method's resolved params group this step reads."""
        return {k: group[k] for k in self.keys}

    def input_names(self, group: Mapping[str, Any]) -> dict[str, str]:
        """The declared inputs a job of an experiment with this params ``group`` has."""
        return {k: v for k, v in self.inputs.items() if k not in self.when or self.when[k](group)}

    def files(self, group: Mapping[str, Any]) -> dict[str, str]:
        """The user files named by ``file_params`` that ``group`` sets."""
        return {k: str(group[key]) for k, key in self.file_params.items() if group.get(key)}

    def gpu(self, group: Mapping[str, Any]) -> int:
        """The `gpu` resource: 1 when its device setting may pick CUDA (`auto` does), else 0."""
        return int(self.device is not None and self.device(group) != "cpu")


@dataclass(frozen=True)
class Report:
    """A report over every experiment of a method (e.g. datus2's backbone benchmark)."""

    command: str
    outputs: tuple[str, ...]  # the target first


@dataclass(frozen=True)
class Method:
    """A method branch: its steps in DAG order, its CLI module, where its final labels are."""

    name: str
    cli: str
    steps: tuple[Step, ...]
    final_labels: str = "refined"
    reports: tuple[Report, ...] = ()

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"method {self.name!r} has no step {name!r} (steps: {[s.name for s in self.steps]})")

    @property
    def shared_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.shared)


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method's declaration (its spec module calls this when imported)."""
    outputs = {s.output for s in method.shared_steps}
    for step in method.steps:
        unknown = set(step.inputs.values()) - outputs - set(COMMON_INPUTS)
        if unknown or (step.shared and not step.output):
            raise ValueError(
                f"{method.name} step {step.name}: unknown inputs {sorted(unknown)} (or a shared "
                "step without an output)"
            )
    _REGISTRY[method.name] = method
    return method


def methods() -> dict[str, Method]:
    """Every method package's declaration, by name, in the order of their package names."""
    if not _REGISTRY:
        import usseg.methods

        for info in sorted(pkgutil.iter_modules(usseg.methods.__path__), key=lambda i: i.name):
            if info.ispkg:
                importlib.import_module(f"usseg.methods.{info.name}.spec")
    return dict(_REGISTRY)


def shared_artifacts() -> frozenset[str]:
    """The artifacts experiments share: the common inputs and every shared step's output. A job
    input logged under one of these names (or ``name/...``) is one its experiment's run lists."""
    return frozenset((*COMMON_INPUTS, *(s.output for m in methods().values() for s in m.shared_steps)))


def method(name: str) -> Method:
    known = methods()
    if name not in known:
        raise KeyError(f"unknown method {name!r} (known: {sorted(known)})")
    return known[name]
