"""DVC stage entry points: each parses its command line, reads its slice of params.yaml and calls
``tavse.pipeline.<stage>.run``."""
