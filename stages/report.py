"""Stage ``report``: the results as one self-contained, offline HTML page (``results/report.html``)."""

from tavse.common.config import load_config
from tavse.common.logs import setup_logging
from tavse.pipeline import report

if __name__ == "__main__":
    setup_logging()
    report.run(load_config(stage="report"))
