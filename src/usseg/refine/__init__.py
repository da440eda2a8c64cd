"""Shared refine stage: patch-level predictions -> full-resolution labels, with a dense CRF.

``upsample`` maps the patch grid back to the original image size, ``crf_reference``
wraps pydensecrf, ``crf_torch`` is the batched PyTorch CRF with the same energy, and
``stage`` runs a split (or a shard of it) in bounded memory.
"""
