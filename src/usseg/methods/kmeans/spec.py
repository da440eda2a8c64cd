"""The kmeans branch's one step: every patch of the split clustered at once."""

from usseg.steps import Method, Step, register_method

SPEC = register_method(
    Method(name="kmeans", cli="usseg.methods.kmeans.cli", steps=(Step("kmeans", "kmeans"),))
)
