"""params.yaml validation: the repo's own file passes; errors name the key."""

from pathlib import Path

import pytest

from usseg import params as P
from usseg.errors import UssegError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas"


def repo_params():
    return P.load_yaml(REPO / "params.yaml")


def test_repo_params_are_valid():
    params = repo_params()
    P.validate(params, SCHEMA)
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
        (lambda p: p["resources"]["threads"].update(kmean=2), "kmean"),
        (lambda p: p["resources"]["threads"].update(kmeans=0), "resources.threads.kmeans"),
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
