"""What every stage reads: the typed config, file writing, audio basics, seeds, paths, logging.

One package so that each stage lists it once in ``dvc.yaml`` (``tavse/common``).
"""
