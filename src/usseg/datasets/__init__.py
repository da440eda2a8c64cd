"""Datasets: download, verify, extract and prepare into one on-disk form."""
