"""Trick bench: measure what PyTorch Lightning training tricks do to speed, memory and loss."""

__version__ = "0.1.0"
