"""Print parameter counts per part for every variant of ``params.yaml`` at one model size.

Usage: ``python -m tavse.models.summary [--size paper|small] [--params params.yaml]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from tavse.common.config import Config, ConfigError, load_config
from tavse.models.tavse import TAVSE, parameter_counts

PAPER_ROI_SIZE = 96  # the paper's mouth crops; other sizes use the ingest crop size


def summary_rows(cfg: Config, size: str) -> list[tuple[str, dict[str, int]]]:
    """(variant, parameter counts) for each variant of ``cfg`` built at ``size``."""
    if size not in cfg.model.sizes:
        raise ConfigError(f"--size {size!r} not in model.sizes {sorted(cfg.model.sizes)}")
    model_cfg = dataclasses.replace(cfg.model, size=size)
    roi = PAPER_ROI_SIZE if size == "paper" else cfg.ingest.roi_size
    return [(name, parameter_counts(TAVSE(model_cfg, v, roi))) for name, v in cfg.variants.items()]


def format_table(rows: list[tuple[str, dict[str, int]]]) -> str:
    """Fixed-width table: one row per variant, one column per part."""
    parts = list(rows[0][1]) if rows else []
    width = max([len("variant")] + [len(name) for name, _ in rows])
    lines = [f"{'variant':<{width}}" + "".join(f"{p:>16}" for p in parts)]
    lines += [f"{name:<{width}}" + "".join(f"{c[p]:>16,}" for p in parts) for name, c in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default=None, help="model size from model.sizes (default: model.size)")
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.params)
        size = args.size or cfg.model.size
        rows = summary_rows(cfg, size)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    roi = PAPER_ROI_SIZE if size == "paper" else cfg.ingest.roi_size
    fusions = ", ".join(f"{name} {v.fusion}" for name, v in cfg.variants.items() if v.fusion)
    print(f"model size {size}, roi {roi}x{roi}, fusion: {fusions or 'none'}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
