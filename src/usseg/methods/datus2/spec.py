"""The DatUS² branch's steps: a K sweep shares the Louvain segments and the segment features."""

from usseg.job_args import field_names
from usseg.methods.datus2.params import CropParams, PseudolabelParams, SegmentParams
from usseg.steps import Method, Report, Step, register_method

SPEC = register_method(
    Method(
        name="datus2",
        cli="usseg.methods.datus2.cli",
        steps=(
            Step("datus2_segments", "datus2-segments", keys=field_names(SegmentParams),
                 shared=True, output="segments", inputs={"features": "features"}),
            Step("datus2_segment_features", "datus2-segment-features",
                 keys=field_names(CropParams), shared=True,
                 output="segment_features", inputs={"segments": "segments", "prepared": "prepared",
                                                    "weights": "weights"},
                 device=lambda p: p["device"]),
            Step("datus2_pseudolabels", "datus2-pseudolabels",
                 keys=field_names(PseudolabelParams), shared=True,
                 output="pseudolabels", inputs={"features": "segment_features", "prepared": "prepared"}),
            Step("datus2_masks", "datus2-masks", keys=(),
                 inputs={"segments": "segments", "pseudolabels": "pseudolabels", "prepared": "prepared"}),
        ),
        reports=(Report("datus2-benchmark", tuple(f"results/datus2/benchmark.{e}" for e in ("md", "csv", "png"))),),
    )
)  # fmt: skip
