"""Method branches: each turns cached features into patch-level predictions."""
