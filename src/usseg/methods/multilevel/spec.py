"""The multilevel branch's steps: three shared level masks, consistency, labelling."""

from usseg.job_args import field_names
from usseg.methods.multilevel.params import LEVEL_PARAMS, ConsistencyParams, LabelParams
from usseg.steps import Method, Step, register_method

LEVEL_INPUTS = {"features": "features", "prepared": "prepared"}
LEVELS = {name: f"level_{name}" for name in ("dataset", "category", "image")}  # input name -> shared output


def _crop(params: dict) -> bool:
    """Only the crop embedding re-forwards the ViT (it reads the weights and may use a GPU)."""
    return params["label"]["embedding"] == "crop"


def _label_device(params: dict) -> str:
    return params["label"]["device"] if _crop(params) else "cpu"


def _level(name: str) -> Step:
    # each level's mask is shared by every experiment (ablations included) agreeing on its keys
    return Step(f"multilevel_{name}", "multilevel-level", keys=field_names(LEVEL_PARAMS[name]),
                shared=True, output=f"level_{name}", inputs=LEVEL_INPUTS)  # fmt: skip


SPEC = register_method(
    Method(
        name="multilevel",
        cli="usseg.methods.multilevel.cli",
        steps=(
            *(_level(name) for name in LEVELS),
            Step("multilevel_consistency", "multilevel-consistency", keys=field_names(ConsistencyParams),
                 inputs=LEVELS),
            Step("multilevel_label", "multilevel-label", keys=field_names(LabelParams),
                 inputs={**LEVELS, "weights": "weights"}, when={"weights": _crop}, device=_label_device),
        ),
        final_labels="labels",
    )
)  # fmt: skip
