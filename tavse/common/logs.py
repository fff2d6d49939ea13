"""Logging setup shared by the stage entry points."""

from __future__ import annotations

import logging
import os


def setup_logging() -> None:
    """INFO to stderr with the logger name, or the level in ``$TAVSE_LOG_LEVEL``."""
    logging.basicConfig(
        level=os.environ.get("TAVSE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
