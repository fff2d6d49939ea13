"""Evaluation of enhanced test mixtures.

``metrics``: per-item PESQ (wb/nb), (E)STOI, SI-SNR(i) and SDR, and a parallel runner that
keeps results in input order. ``stats``: summaries, bootstrap CIs, paired Wilcoxon tests
between variants and markdown tables. Import the submodules directly; this package imports
nothing heavy so spawned worker processes start light.
"""

from __future__ import annotations

import os
import sys

from tavse.common.logs import ignore_ctrl_c_in_worker

# Libraries that size their thread pools from these when first loaded (OpenMP, OpenBLAS, MKL, numexpr).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_worker_threads() -> None:
    """Process-pool initializer: one thread per worker, so N workers use N cores, not N²; Ctrl-C left to the parent.

    Lives here, away from numpy/torch, so unpickling it in a spawned worker is cheap. The
    pool's parent also passes THREAD_ENV through the environment, which is what counts for
    libraries the worker has already loaded; this covers anything loaded later.
    """
    ignore_ctrl_c_in_worker()
    for key in THREAD_ENV:
        os.environ[key] = "1"
    torch = sys.modules.get("torch")
    if torch is not None:  # already loaded: it honours this at run time
        torch.set_num_threads(1)
