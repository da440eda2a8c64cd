"""params.yaml validation: the repo's own file passes; errors name the key."""

from pathlib import Path

import pytest

from usseg import params as P
from usseg.errors import UssegError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas"


def repo_params():
    """params.yaml with its active preset's experiments as a list."""
    return P.select_preset(P.load_yaml(REPO / "params.yaml"))


def test_repo_params_are_valid():
    P.validate(P.load_yaml(REPO / "params.yaml"), SCHEMA)
    params = repo_params()
    for preset in params["presets"]:
        P.validate(P.select_preset({**params, "preset": preset}), SCHEMA)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda p: p["features"].update(bogus=1), "bogus"),
        (lambda p: p["features"].update(batch_size="eight"), "features.batch_size"),
        (lambda p: p["experiments"][0].update(method="nope"), "nope"),
        (lambda p: p["experiments"][0].update(dataset="imagenet"), "imagenet"),
        (lambda p: p["experiments"][0].update(backbone="resnet9000"), "resnet9000"),
        (lambda p: p.update(unknown_group={}), "unknown_group"),
        (lambda p: p["refine"].update(crf=False), "refine.crf: False is not one of .*write none, not off"),
    ],
)
def test_errors_name_the_problem(mutate, needle):
    params = repo_params()
    mutate(params)
    with pytest.raises(UssegError, match=needle):
        P.validate(params, SCHEMA)


def test_overrides_merge_per_experiment():
    params = repo_params()
    exp = {**params["experiments"][0], "overrides": {"kmeans": {"k": 9}}}
    merged = P.experiment_params(params, exp)
    assert merged["kmeans"]["k"] == 9
    assert merged["kmeans"]["niter"] == params["kmeans"]["niter"]
    assert params["kmeans"]["k"] is None


def test_unknown_preset_is_named():
    with pytest.raises(UssegError, match="nosuch"):
        P.select_preset({**repo_params(), "preset": "nosuch"})


def test_experiments_name_a_preset_whose_defaults_each_experiment_extends():
    raw = P.load_yaml(REPO / "params.yaml")
    assert raw["experiments"] == "demo"
    exps = {e["name"]: e for e in P.select_preset(raw)["experiments"]}
    assert exps["kmeans-demo"] == {"name": "kmeans-demo", "method": "kmeans", "dataset": "demo",
                                   "backbone": "dinov2_vits14_imgfocus"}
    assert exps["kmeans-demo-crf"]["overrides"] == {"refine": {"crf": "stego"}}
    paper = {e["name"]: e for e in P.select_preset({**raw, "preset": "paper"})["experiments"]}
    assert paper["datus2-suim-k10"]["backbone"] == "dino_vitb8" and len(paper) == 47
    with pytest.raises(UssegError, match="params experiments: unknown preset 'nosuch'"):
        P.select_preset({**raw, "experiments": "nosuch"})


def test_dvc_set_param_rewrites_exactly_one_line(tmp_path):
    """`dvc exp run -S kmeans.niter=60` rewrites params.yaml with DVC's own function: the
    presets, comments and every other value survive, and the result still validates."""
    from dvc.utils.hydra import apply_overrides

    original = (REPO / "params.yaml").read_text().splitlines()
    copy = tmp_path / "params.yaml"
    copy.write_text("\n".join(original) + "\n")
    apply_overrides(str(copy), ["kmeans.niter=60"])
    rewritten = copy.read_text().splitlines()
    assert len(rewritten) == len(original)
    changed = [(a, b) for a, b in zip(original, rewritten, strict=True) if a != b]
    assert changed == [("  niter: 50", "  niter: 60")]
    params = P.load_yaml(copy)
    P.validate(params, SCHEMA)
    assert params["kmeans"]["niter"] == 60 and params["refine"]["crf"] == "none"
