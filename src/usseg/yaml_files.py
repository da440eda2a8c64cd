"""Every YAML file the project reads, read strictly: a duplicate key or a syntax error stops
the run naming the file, the line and the column.

PyYAML (and so Snakemake) keeps the last of two equal keys, so a preset listing one
experiment name twice silently loses the first experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from usseg.errors import UssegError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first at line {first.line + 1}); a YAML mapping keeps only "
                    "the last of equal keys, so the first would be lost",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse ``text`` (from ``source``, named in errors as ``file:line:column``)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        message = exc.problem or "not valid YAML"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            at = exc.context_mark
            message += f" ({exc.context} that starts at line {at.line + 1}, column {at.column + 1})"
        elif exc.context:
            message += f" ({exc.context})"
        raise UssegError(f"{where}: {message}") from exc
    except yaml.YAMLError as exc:
        raise UssegError(f"{source}: not valid YAML: {exc}") from exc


def read_yaml(path: str | Path) -> Any:
    """The parsed content of the YAML file ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UssegError(f"cannot read {path}: {exc}") from exc
    return parse_yaml(text, path)
