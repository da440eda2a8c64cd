"""The kmeans branch's one step: every patch of the split clustered at once."""

from usseg.job_args import field_names
from usseg.methods.kmeans.params import KMeansParams
from usseg.steps import Method, Step, register_method

SPEC = register_method(
    Method(name="kmeans", cli="usseg.methods.kmeans.cli",
           steps=(Step("kmeans", "kmeans", keys=field_names(KMeansParams)),))  # fmt: skip
)
