"""Torch reference Parrot and the training of the shipped tiny model (not installed with the package)."""
