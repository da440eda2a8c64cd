"""Contracts between stages, below every stage that uses them: the artifacts that cross stages
(prepared dataset, feature store, patch predictions, segment stores, label maps, metrics files),
each with one reader and one writer, and the one home of atomic writes, hashes and locks."""
