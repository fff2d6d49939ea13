"""Stage ``compare``: paired Wilcoxon tests between variants, the results and comparison tables."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import compare

if __name__ == "__main__":
    setup_logging()
    compare.run(load_config(stage="compare"))
