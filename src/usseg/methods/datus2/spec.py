"""The DatUS² branch's steps: a K sweep shares the Louvain segments and the segment features."""

from usseg.steps import Method, Report, Step, register_method

SPEC = register_method(
    Method(
        name="datus2",
        cli="usseg.methods.datus2.cli",
        steps=(
            Step("datus2_segments", "datus2-segments", keys=("center", "threshold", "resolution", "seed", "tau"),
                 shared=True, output="segments", inputs={"features": "features"}),
            Step("datus2_segment_features", "datus2-segment-features",
                 keys=("fill", "crop_resize", "crop_size", "batch_size", "device"), shared=True,
                 output="segment_features", inputs={"segments": "segments", "prepared": "prepared",
                                                    "weights": "weights"},
                 device=lambda p: p["device"]),
            Step("datus2_pseudolabels", "datus2-pseudolabels",
                 keys=("k", "pca", "init", "epochs", "kmeans_batch_size", "seed"), shared=True,
                 output="pseudolabels", inputs={"features": "segment_features", "prepared": "prepared"}),
            Step("datus2_masks", "datus2-masks", keys=(),
                 inputs={"segments": "segments", "pseudolabels": "pseudolabels", "prepared": "prepared"}),
        ),
        reports=(Report("datus2-benchmark", tuple(f"results/datus2/benchmark.{e}" for e in ("md", "csv", "png"))),),
    )
)  # fmt: skip
