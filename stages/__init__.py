"""Thin DVC stage entry points: each reads its slice of params.yaml and calls one tavse function."""
