"""`dvc plots show` / `dvc plots diff` write a self-contained page (vega inlined, no CDN).

Runs the real DVC CLI in a throwaway repository configured like this one (``plots.html_template``
copied from ``.dvc/config``, ``plots/template.html`` copied alongside) and checks the HTML only;
no browser and no network needed.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "plots" / "template.html"
BUILD_SCRIPT = ROOT / "scripts" / "build_plots_template.sh"
TSV = "dvclive/x/plots/metrics/val/si_snri.tsv"
ROWS = [(0, "1.25"), (1, "3.5"), (2, "4.75"), (3, "6.125")]

# Anything that makes the browser fetch a script/style from the network.
REMOTE_REF = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", re.I)


def _dvc() -> str:
    exe = Path(sys.executable).parent / "dvc"
    if exe.exists():
        return str(exe)
    found = shutil.which("dvc")
    assert found, "the dvc CLI is a requirement (requirements.txt); run scripts/setup.sh"
    return found


def _project_html_template_setting() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".dvc" / "config")
    assert cfg.has_option("plots", "html_template"), ".dvc/config lacks [plots] html_template"
    return cfg.get("plots", "html_template").strip().strip("'\"")


def _pinned_versions() -> dict[str, str]:
    text = BUILD_SCRIPT.read_text()
    names = {"VEGA_VERSION": "vega", "VEGA_LITE_VERSION": "vega-lite", "VEGA_EMBED_VERSION": "vega-embed"}
    return {pkg: re.search(rf"^{var}=(\S+)$", text, re.M).group(1) for var, pkg in names.items()}


def _assert_offline_page(html: str) -> None:
    assert REMOTE_REF.search(html) is None, REMOTE_REF.search(html).group(0)
    assert "https://cdn" not in html and "cdn.jsdelivr" not in html
    # DVC's template placeholders were all substituted.
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        assert placeholder not in html
    # The three libraries are inlined: their UMD globals and the call DVC emits per plot.
    assert ".vega={}" in html
    assert ".vegaLite={}" in html
    assert ".vegaEmbed=" in html
    assert "vegaEmbed('#" in html


def test_config_points_at_template():
    # DVC joins a relative plots.html_template onto the .dvc/ directory (dvc/commands/plots.py).
    setting = _project_html_template_setting()
    resolved = Path(setting) if os.path.isabs(setting) else ROOT / ".dvc" / setting
    assert resolved.resolve() == TEMPLATE.resolve()


def test_template_file():
    html = TEMPLATE.read_text(encoding="utf8")
    assert TEMPLATE.stat().st_size < 2_000_000
    assert html.count("{plot_divs}") == 1  # DVC refuses a template without it
    assert "{scripts}" not in html  # DVC would inject its CDN <script src> tags there
    assert "{refresh_tag}" in html
    head = html[:4000]
    for pkg, version in _pinned_versions().items():
        assert f"{pkg}@{version}" in head, f"header comment does not name {pkg}@{version}"
    assert "BSD-3-Clause" in head
    assert "scripts/build_plots_template.sh" in head
    assert REMOTE_REF.search(html) is None
    assert "sourceMappingURL" not in html


@pytest.fixture
def plots_repo(tmp_path):
    """A tiny git + DVC repo with one dvclive-style TSV, a top-level plot and this project's template setting."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        DVC_TEST="1",
        DVC_SITE_CACHE_DIR=str(tmp_path / "site"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    dvc = _dvc()

    def run(*args: str) -> str:
        proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    run("git", "init", "-q")
    run(dvc, "init", "-q")
    # Same layout and same setting as this project: plots/template.html + .dvc/config's value.
    (repo / "plots").mkdir()
    shutil.copyfile(TEMPLATE, repo / "plots" / TEMPLATE.name)
    run(dvc, "config", "plots.html_template", _project_html_template_setting())

    tsv = repo / TSV
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tsi_snri\n" + "".join(f"{s}\t{v}\n" for s, v in ROWS))
    (repo / "dvc.yaml").write_text(
        f"plots:\n  - Validation SI-SNRi (dB):\n      x: step\n      y:\n        {TSV}: si_snri\n"
    )
    return repo, run, dvc


@pytest.mark.e2e
def test_plots_show_is_offline(plots_repo, tmp_path):
    repo, run, dvc = plots_repo
    out = tmp_path / "show"
    stdout = run(dvc, "plots", "show", "--out", str(out))
    page = out / "index.html"
    assert page.as_uri() in stdout
    html = page.read_text(encoding="utf8")
    _assert_offline_page(html)
    assert "Validation SI-SNRi (dB)" in html
    for step, value in ROWS:
        assert f'"step": "{step}", "si_snri": "{value}"' in html


@pytest.mark.e2e
def test_plots_diff_is_offline(plots_repo, tmp_path):
    repo, run, dvc = plots_repo
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "baseline")
    with (repo / TSV).open("a") as f:
        f.write("4\t7.875\n")
    out = tmp_path / "diff"
    run(dvc, "plots", "diff", "HEAD", "--out", str(out))
    html = (out / "index.html").read_text(encoding="utf8")
    _assert_offline_page(html)
    assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html
    assert '"si_snri": "7.875"' in html
