"""Baseline `kmeans`: DINO features + k-means, the baseline every USS paper reports."""
