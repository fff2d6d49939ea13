"""Stage ``report``: the results as one self-contained, offline HTML page (``results/report.html``).

The page itself is :mod:`tavse.evaluation.page` (``python -m tavse.study table`` renders it too,
with the study's sections added).
"""

from __future__ import annotations

from pathlib import Path

from tavse.common.config import Config
from tavse.evaluation.page import write_report_page


def run(cfg: Config) -> Path:
    """Write ``evaluation.out_dir/report.html``; returns its path."""
    return write_report_page(cfg)
