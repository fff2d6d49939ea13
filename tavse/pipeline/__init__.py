"""The stages of dvc.yaml, one module each: ``tavse.pipeline.<stage>.run(cfg, ...)`` is the stage.

``stages/<stage>.py`` only parses its command line and calls ``run``; the library parts a stage
uses (corpus readers, the mixer, the models, the metrics) live in the other subpackages.
"""
