"""Deep Spectral Methods (Melas-Kyriazi et al., CVPR 2022): per-image Laplacian eigenvectors of
the patch-key affinity plus a KNN colour affinity, multi-region segments, a crop feature per
segment, k-means over the dataset's segments. See docs/methods/spectral.md.
"""
