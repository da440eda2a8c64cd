"""The context_aware branch's steps: training reads every key but the prediction-only ones."""

from usseg.job_args import field_names
from usseg.methods.context_aware.params import PredictParams, TrainParams
from usseg.steps import Method, Step, register_method

VIT = {"weights": "weights"}  # arch=vit trains heads on the frozen backbone's features


def _vit(group: dict) -> bool:
    return group["arch"] == "vit"


SPEC = register_method(
    Method(
        name="context_aware",
        cli="usseg.methods.context_aware.cli",
        steps=(
            # the ResNet's init checkpoint: a user's file, or data/checkpoints/{name}.pth fetched by the DAG
            Step("context_aware_train", "context-aware-train", keys=field_names(TrainParams),
                 inputs=VIT, when={"weights": _vit}, file_params={"checkpoint": "checkpoint"},
                 device=lambda p: p["device"]),
            Step("context_aware_predict", "context-aware-predict", keys=field_names(PredictParams), inputs=VIT,
                 when={"weights": _vit}, device=lambda p: p["device"]),
        ),
    )
)  # fmt: skip
