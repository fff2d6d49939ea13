"""README "Using the real corpora": its command block runs verbatim against the local fake Hub and Zenodo.

Only the servers are substituted, through the variables the README names: ``HF_ENDPOINT`` and
``TAVSE_ZENODO_ENDPOINT`` point at 127.0.0.1, ``CORPORA`` at a temporary folder, ``HF_TOKEN`` is the
fake Hub's token. The fake Hub holds all 142 archives (speaker 1 in the real layout, built from the
real frame of ../shared; the others tiny), so the block's "everything" download really fetches 142.
``dvc repro`` sits in its own block and is not run here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tavse.download.huggingface import speaker_path
from tests.fake_servers import COMMIT, TOKEN, FakeServer, make_zip, serve
from tests.sfreal import write_real_layout_archive

ROOT = Path(__file__).resolve().parents[1]


def readme_block() -> str:
    """The first ```bash block of the README section "Using the real corpora"."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Using the real corpora\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    m = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert m, "README: no ```bash block in 'Using the real corpora'"
    return m.group(1)


def test_readme_block_names_the_steps() -> None:
    block = readme_block()
    for step in ("tavse.download speakingfaces", "tavse.inspect", "--jobs", "tavse.download demand", "--status"):
        assert step in block
    assert "dvc repro" not in block and "HF_TOKEN=" not in block  # the token never sits in a command


def test_readme_commands_run_verbatim(tmp_path: Path) -> None:
    block = readme_block()
    state = FakeServer()
    write_real_layout_archive(tmp_path / "sub_1_ia.zip", speaker=1, utterances=((1, 1, 40, None), (1, 2, 41, 3)))
    state.hf = {speaker_path(s): make_zip(f"sub_{s}_ia/trial_1/x.png", 300, s) for s in range(2, 143)}
    state.hf[speaker_path(1)] = (tmp_path / "sub_1_ia.zip").read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    with serve(state) as (_, url):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TAVSE_"))}
        env.update(
            HF_ENDPOINT=url,
            TAVSE_ZENODO_ENDPOINT=url,
            HF_TOKEN=TOKEN,
            HF_HOME=str(tmp_path / "hf"),
            CORPORA=str(tmp_path / "corpora"),
            PYTHONPATH=str(ROOT),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    assert TOKEN not in out + err
    # inspect on the first archive: the real layout is accepted
    assert "archive: " + str(tmp_path / "corpora" / "speakingfaces" / "sub_1_ia.zip") in out
    assert (
        "thermal Iron residual" in out
        and "verdict: ACCEPTED - ingest will take 1 of 2 utterance(s) of speaker 1" in out
    )
    # everything downloaded, verified and listed; --status says so without the network
    sf = json.loads((tmp_path / "corpora" / "speakingfaces" / "manifest.json").read_text())
    assert sf["source"]["commit"] == COMMIT and len(sf["files"]) == 142
    assert "142 complete, 0 partial, 0 missing" in out and "142 of 142 file(s) complete" in out
    assert "download: not running; the last run (pid" in out and ") finished, updated" in out
    demand = json.loads((tmp_path / "corpora" / "demand" / "manifest.json").read_text())
    assert [f["path"] for f in demand["files"]] == ["DKITCHEN_16k.zip", "NPARK_16k.zip", "SCAFE_48k.zip"]
    # not a terminal: plain progress lines, no bars; the token went to the Hub only
    assert "progress: total" in err and "it/s]" not in err
    zenodo = [a for _, p, _, a in state.requests if p.startswith(("/api/records", "/records/"))]
    assert zenodo and not any(zenodo)
    assert any(a == f"Bearer {TOKEN}" for _, p, _, a in state.requests if "/resolve/" in p)
