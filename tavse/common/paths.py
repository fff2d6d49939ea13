"""Machine-specific locations come from the environment (``.env``), never from the repo."""

from __future__ import annotations

import os
from pathlib import Path


def scratch_dir() -> Path:
    """Working state that must survive a killed stage (resumable shards, training state).

    ``$TAVSE_SCRATCH_DIR`` on a cluster (a scratch filesystem); ``.tavse/scratch`` in the
    repository otherwise. Never a DVC output: DVC deletes outputs before re-running a stage.
    """
    env = os.environ.get("TAVSE_SCRATCH_DIR")
    return Path(env) if env else Path(".tavse") / "scratch"
