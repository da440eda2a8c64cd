"""The spectral branch's steps: segments, a crop feature per segment (DatUS²'s step), clusters, labels."""

from usseg.job_args import field_names
from usseg.methods.datus2.params import CropParams
from usseg.methods.spectral.params import ClusterParams, SegmentParams
from usseg.steps import Method, Step, register_method

SPEC = register_method(
    Method(
        name="spectral",
        cli="usseg.methods.spectral.cli",
        steps=(
            Step("spectral_segments", "spectral-segments", keys=field_names(SegmentParams), shared=True,
                 output="segments", inputs={"features": "features", "prepared": "prepared"}),
            # DatUS²'s crop embedding, run on these segments with this group's crop settings
            Step("spectral_segment_features", "datus2-segment-features", cli="usseg.methods.datus2.cli",
                 keys=field_names(CropParams), shared=True, output="segment_features",
                 inputs={"segments": "segments", "prepared": "prepared", "weights": "weights"},
                 device=lambda p: p["device"]),
            Step("spectral_clusters", "spectral-clusters", keys=field_names(ClusterParams), shared=True,
                 output="clusters", inputs={"features": "segment_features", "prepared": "prepared"}),
            Step("spectral_masks", "spectral-masks", keys=(), inputs={"segments": "segments", "clusters": "clusters"}),
        ),
    )
)  # fmt: skip
