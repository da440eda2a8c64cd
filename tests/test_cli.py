"""`usseg` as a command of its own: fast start, defaults from params.yaml, help on every option."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from usseg.cli import COMMANDS, build_parser, main
from usseg.job_args import build_typed, named_experiment, read_params_file

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "mlflow", "faiss", "matplotlib")
MODULES_AFTER = """
import json, sys
from usseg.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def modules_after(argv: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> set[str]:
    """Top-level modules loaded once ``usseg <argv>`` has run in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", MODULES_AFTER, json.dumps(argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_loads_no_heavy_module(command: str | None) -> None:
    loaded = modules_after([command, "--help"] if command else ["--help"])
    assert "usseg" in loaded and sorted(loaded.intersection(HEAVY)) == []


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_option_has_help() -> None:
    parser = build_parser()
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, p in {"usseg": parser, **subparsers(parser)}.items()
        for a in p._actions
        if not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert missing == []
    assert set(subparsers(parser)) == set(COMMANDS)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"usseg {version('usseg')}\n"


# ------------------------------------------------------------------ tiny inputs

SIZE, GRID, DIM = (24, 32), (4, 4), 8


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A user's image folder with masks, its prepared dataset, random features, hard patch labels."""
    from usseg.artifacts.features import create_store, write_batch
    from usseg.artifacts.predictions import write_predictions
    from usseg.artifacts.prepared import PreparedDataset
    from usseg.datasets import folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        truth = np.zeros(SIZE, np.uint8)
        truth[:, SIZE[1] // 2 :] = 1
        rgb = np.where(truth[..., None] == 1, [30, 160, 60], [210, 50, 40]) + rng.normal(0, 6, (*SIZE, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        Image.fromarray(truth).save(tmp_path / "masks" / f"im{i}.png")
    dataset = {"adapter": "folder", "name": "tiny", "split": "val", "classes": ["left", "right"],
               "has_background": False, "images": "images", "masks": "masks"}
    folder.prepare(None, tmp_path / "prepared", build_typed(folder.PARAMS, dataset))
    records = PreparedDataset(tmp_path / "prepared").records("val")
    create_store(tmp_path / "features.zarr", records, GRID, DIM, 1, {"grid": list(GRID)})
    write_batch(tmp_path / "features.zarr", 0, rng.normal(size=(3, *GRID, DIM)), rng.normal(size=(3, DIM)),
                rng.random((3, 1, *GRID)))
    labels = np.zeros((3, *GRID), np.uint8)
    labels[:, :, 2:] = 1
    write_predictions(tmp_path / "scores.zarr", [r.id for r in records], [r.height for r in records],
                      [r.width for r in records], labels=labels, num_labels=2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["datasets"]["tiny"] = dataset
    params["kmeans"].update(niter=2, nredo=1)
    params["presets"]["cli"] = {"experiments": {
        "km-three": {"method": "kmeans", "dataset": "tiny", "backbone": "dinov2_vits14",
                     "overrides": {"kmeans": {"k": 3}}},
    }}
    params["experiments"] = "cli"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return {"root": tmp_path}


def num_labels(store: Path) -> int:
    from usseg.zarr_io import open_zarr

    return int(open_zarr(store).attrs["num_labels"])


def test_a_stage_runs_on_the_params_file_defaults(tiny: dict[str, Any]) -> None:
    args = ["kmeans", "--features", "features.zarr", "--dataset-dir", "prepared"]
    assert main([*args, "--out", "default.zarr"]) == 0
    assert num_labels(Path("default.zarr")) == 2  # k: null = the dataset's two classes
    assert main([*args, "--out", "named.zarr", "--experiment", "km-three"]) == 0
    assert num_labels(Path("named.zarr")) == 3  # the experiment's override
    record = named_experiment(read_params_file("params.yaml"), "km-three", "params.yaml")
    record["params"]["kmeans"]["k"] = 4  # a record file (as the workflow writes) is read as it is
    Path("record.json").write_text(json.dumps(record))
    assert main([*args, "--out", "record.zarr", "--experiment", "record.json"]) == 0
    assert num_labels(Path("record.zarr")) == 4
    runs = mlflow.search_runs(experiment_names=["usseg"], output_format="list")
    parents = [r for r in runs if r.info.run_name == "km-three"]
    assert len(parents) == 1
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.params["k"] for r in jobs) == ["3", "4"]


def test_typed_step_params_are_parsed_once_and_record_only_what_the_step_reads(tiny, capsys) -> None:
    """A step with a typed spec gets ``args.config`` and records its own keys, also when given a
    whole group by hand; a missing key stops the job naming the command and the key."""
    from usseg.job_args import resolve_job_args
    from usseg.methods.spectral.params import SegmentParams

    group = yaml.safe_load(Path("params.yaml").read_text())["spectral"]
    argv = ["spectral-segments", "--features", "f.zarr", "--dataset-dir", "d", "--split", "val", "--out", "o"]
    args = build_parser("spectral-segments").parse_args([*argv, "--params", json.dumps(group)])
    resolve_job_args(args)
    assert args.config == SegmentParams(num_eigenvectors=group["num_eigenvectors"],
                                        num_segments=group["num_segments"],
                                        colour_lambda=group["colour_lambda"], seed=group["seed"])  # fmt: skip
    assert args.params == {"num_eigenvectors": 20, "num_segments": 15, "colour_lambda": 10.0, "seed": 0}
    bad = {k: v for k, v in group.items() if k != "num_segments"}
    assert main([*argv, "--params", json.dumps(bad)]) == 2
    assert "usseg spectral-segments: error: --params: missing ['num_segments']" in capsys.readouterr().err
    # the values meet the group's schema, the one home of their rules
    assert main([*argv, "--params", json.dumps({**group, "num_segments": 1})]) == 2
    assert "params spectral.num_segments: 1 is less than the minimum of 2" in capsys.readouterr().err


def test_dataset_backbone_and_checkpoint_entries_are_typed_and_checked_as_entries(tiny, capsys) -> None:
    """download/prepare, weights and checkpoint parse their params.yaml entry once, typed, and
    check it against the entry's rules: before, a misspelt ``weights`` fell back to timm's
    pretrained tag and a misspelt ``size_mismatch`` to its default, silently."""
    from usseg.datasets.params import FileSpec
    from usseg.datasets.suim import SuimParams
    from usseg.job_args import resolve_job_args

    archive = {"test": {"path": "TEST.zip", "checksum": None}}
    argv = ["download", "--dataset", "suim", "--out", "raw", "--params"]
    args = build_parser("download").parse_args([*argv, json.dumps({"split": "test", "archives": archive})])
    resolve_job_args(args)
    assert args.config == SuimParams(split="test", archives={"test": FileSpec(path="TEST.zip")})
    assert args.params == {"split": "test", "archives": archive}  # recorded as given, at every depth
    cases = [
        (["weights", "--backbone", "dino_vits16", "--out", "w.safetensors", "--params", '{"weigths": "x.pth"}'],
         "params backbones.dino_vits16: Additional properties are not allowed ('weigths' was unexpected)"),
        ([*argv, '{"split": "test", "size_mismatc": "skip"}'],
         "params data.datasets.suim: Additional properties are not allowed ('size_mismatc' was unexpected)"),
        (["prepare", "--dataset", "tiny", "--out", "p", "--params", '{"adapter": "folder", "split": "val", "images": 3}'],
         "params data.datasets.tiny.images: 3 is not of type 'string'"),
        (["checkpoint", "--name", "dino.v2", "--out", "data/checkpoints/dino.v2.pth", "--params", '{"url": null}'],
         "usseg checkpoint: error: --params: missing ['checksum']"),
        (["checkpoint", "--name", "dino.v2", "--out", "data/checkpoints/dino.v2.pth",
          "--params", '{"url": null, "checksum": 5}'],
         "params checkpoints.dino.v2.checksum: 5 is not of type 'string', 'null'"),
    ]
    for command, message in cases:
        assert main(command) == 2, command
        assert message in capsys.readouterr().err, command
    assert not Path("w.safetensors").exists() and not Path("raw").exists() and not Path("p").exists()


def test_an_unknown_experiment_name_is_an_error_naming_it(tiny: dict[str, Any], capsys) -> None:
    rc = main(["kmeans", "--features", "features.zarr", "--dataset-dir", "prepared", "--out", "x.zarr",
               "--experiment", "km-four"])
    err = capsys.readouterr().err
    assert rc == 2 and "params.yaml: experiment 'km-four' is not in the active preset" in err
    assert "km-three" in err and not Path("x.zarr").exists()


def test_evaluate_summary_refine_and_prepare_never_load_torch(tiny: dict[str, Any]) -> None:
    root = tiny["root"]
    refine = yaml.safe_load((REPO / "params.yaml").read_text())["refine"]
    steps = [
        ["prepare", "--dataset", "tiny", "--out", "prepared2"],
        ["refine", "--scores", "scores.zarr", "--dataset-dir", "prepared", "--split", "val",
         "--out", "refined", "--params", json.dumps({**refine, "crf": "stego", "impl": "pydensecrf"})],
        ["evaluate", "--labels", "refined", "--dataset-dir", "prepared", "--split", "val", "--out", "eval",
         "--metrics", "metrics.json", "--pictures", "1"],
        ["summary", "eval", "--out-md", "summary.md", "--out-csv", "summary.csv"],
    ]
    env = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    for argv in steps:
        loaded = modules_after(argv, cwd=root, env=env)
        assert "usseg" in loaded and sorted(loaded.intersection({"torch", "timm"})) == [], argv
    assert json.loads((root / "metrics.json").read_text())["hungarian"]["mIoU"] == 100.0
    assert (root / "summary.md").is_file() and (root / "prepared2" / "val.csv").is_file()


@pytest.mark.parametrize("module", ["usseg.methods.datus2.stages", "usseg.methods.multilevel.stages"])
def test_stage_modules_leave_torch_to_the_jobs_that_run_a_network(module: str) -> None:
    """datus2 segments/pseudo-labels/masks and multilevel levels/consistency start without torch."""
    code = f"import json, sys, {module}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert sorted(set(json.loads(out)).intersection({"torch", "torchvision", "timm", "mlflow", "matplotlib"})) == []


def test_scale_bench_calls_every_stage_with_arguments_its_cli_accepts() -> None:
    """bench/scale.py drives the stages as subprocesses: each call must parse as the CLI stands."""
    import importlib.util

    from usseg.cli import build_parser

    spec = importlib.util.spec_from_file_location("scale_bench", REPO / "bench/scale.py")
    scale = sys.modules["scale_bench"] = importlib.util.module_from_spec(spec)  # its dataclass needs it
    spec.loader.exec_module(scale)
    branches = scale.stages(Path("/work"), 8, Path("/w.pth"), scale.groups(112), "dino_vits16", "voc")
    calls = [args for steps in branches.values() for _, args in steps]
    assert len(calls) == 18
    for args in calls:
        try:
            build_parser(args[0]).parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"usseg refuses the scale bench's call: usseg {' '.join(args)}") from exc


def test_ci_runs_the_readme_test_command_verbatim():
    """The README's command 2 is the whole test set-up: CI runs exactly it, nothing before
    (it installed SLURM itself, so command 2 failed on a fresh machine: #18.9)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("python3 -m venv") and "pytest" in line)
    ci = [line for line in (repo / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]  # fmt: skip
    assert ci == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', command]
