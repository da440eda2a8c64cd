"""DatUS² (Kumar et al., 2024): Louvain segments of patch-key graphs, segment-level
pseudo-labels over the whole split, dense patch-level pseudo-masks.

Follows the official code (SonalKumar95/DatUS) step by step except for its documented
defects; see docs/methods/datus2.md.
"""
