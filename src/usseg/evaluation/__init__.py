"""Evaluation: one confusion matrix over the split, cluster-to-class matching, metrics."""
