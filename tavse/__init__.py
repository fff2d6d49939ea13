"""TAVSE: thermal audio-visual speech enhancement, as a reproducible DVC pipeline."""

__version__ = "0.1.0"
