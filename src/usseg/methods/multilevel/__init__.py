"""Branch `multilevel`: the Lightweight Clustering Framework (methods.md §1).

Binary foreground masks from k-means at three levels (dataset, pseudo-category, image),
made consistent, refined by the shared refine stage, then labelled by clustering the
CLS embeddings of the foreground regions. docs/methods/multilevel.md says what the paper
states and what this branch chose.
"""
