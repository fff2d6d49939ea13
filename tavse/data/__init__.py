"""Training and evaluation data: segments, frozen mixture lists, torch Datasets.

- :mod:`tavse.data.segments`: frame ↔ sample arithmetic and 7-frame-aligned segment starts.
- :mod:`tavse.data.mixtures`: ID-keyed mixture lists (CSV), seeded per utterance; the
  ``val_mixtures`` stage.
- :mod:`tavse.data.dataset`: ``TrainingSet`` (on-the-fly mixtures), ``MixtureSet`` (a frozen
  list), ``NoiseBank``, and DataLoader helpers.

Nothing is re-exported here so that the mixture-list stage does not import torch.
"""
