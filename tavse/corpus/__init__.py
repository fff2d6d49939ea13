"""Readers of the real corpus layouts (SpeakingFaces, DEMAND) and the LMDB store."""
