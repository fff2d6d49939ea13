"""Helpers shared by the benchmarks: finding the corpus to measure on, machine facts, output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from tavse.common.config import Config, load_config

OUT = Path("bench/out")


def machine() -> dict:
    """Facts about where a figure was measured."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def config() -> Config:
    return load_config("params.yaml")


def save(name: str, result: dict) -> Path:
    """Write the result as JSON under bench/out/ and return the path."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(dict(result, machine=machine()), indent=2) + "\n")
    return path
