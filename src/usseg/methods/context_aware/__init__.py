"""Method branch `context_aware`: siamese PSG + CAE training (docs/methods/context_aware.md)."""
