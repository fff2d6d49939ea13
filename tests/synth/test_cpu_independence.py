"""The synthetic corpora are the same bytes whichever SIMD kernels the libraries pick.

OpenCV, NumPy, OpenBLAS and PyTorch choose kernels at run time from the processor's
features, so a corpus built on an AVX-512 Xeon could differ from one built on an AVX2
EPYC. Each library has a switch that makes it pick older kernels on this very machine;
the test builds a small corpus (``synth_corpus`` + ``synth_noise``) in a subprocess per
switch and compares every zip member's CRC and every other file's bytes with the default
build. Before comparing, each subprocess shows that its switch really changed the kernels
(a probe computation outside synthesis gives other bits), so the test can fail.

Run this file directly to build the corpus: ``python tests/synth/test_cpu_independence.py OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every SIMD level above each library's baseline, switched off. Names the CPU lacks are
# ignored (OpenCV prints a note on stderr).
SELECTIONS: dict[str, dict[str, str]] = {
    "default": {},
    "opencv": {"OPENCV_CPU_DISABLE": "AVX512-SKX,AVX2,FMA3,AVX,FP16,SSE4.2,SSE4.1,POPCNT,SSSE3"},
    "numpy": {
        "NPY_DISABLE_CPU_FEATURES": "AVX512_SPR AVX512_ICL AVX512_CNL AVX512_CLX AVX512_SKX AVX512_KNM "
        "AVX512_KNL AVX512CD AVX512F AVX2 FMA3 F16C AVX SSE42 POPCNT SSE41 SSSE3"
    },
    "openblas": {"OPENBLAS_CORETYPE": "Prescott"},
    "torch": {"ATEN_CPU_CAPABILITY": "default"},
}
# Which probe entry each switch must change.
PROBED = {"opencv": "opencv_blur", "numpy": "numpy_exp32", "openblas": "blas_matmul", "torch": "torch_capability"}


# ----------------------------------------------------------------- the subprocess side


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe(with_torch: bool) -> dict[str, str]:
    """Fingerprints of computations whose kernels the switches select (outside synthesis)."""
    import cv2
    import numpy as np
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (120, 160)).astype(np.float32)
    x32 = rng.uniform(-20, 20, 4096).astype(np.float32)
    a, b = rng.standard_normal((64, 64)), rng.standard_normal((64, 64))
    out = {
        "opencv_features": cv2.getCPUFeaturesLine(),
        "opencv_blur": _sha(cv2.GaussianBlur(img, (0, 0), 1.3).tobytes()),
        "numpy_features": " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)),
        "numpy_exp32": _sha(np.exp(x32).tobytes()),
        "blas_matmul": _sha((a @ b).tobytes()),
    }
    if with_torch:
        import torch

        out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def corpus_digest(out: Path) -> dict[str, str]:
    """CRC32 and size of every zip member, SHA-256 of every other file, by relative path."""
    digest = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if f.suffix == ".zip":
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    digest[f"{rel}::{info.filename}"] = f"{info.CRC:08x}:{info.file_size}"
        else:
            digest[rel] = _sha(f.read_bytes())
    return digest


def build(out: Path) -> None:
    """Build the test corpus into ``out`` and write ``out.json`` (probe, digest, modules)."""
    sys.path.insert(0, str(ROOT))
    from tavse.common.config import config_from_dict
    from tavse.synth.corpus import write_corpus
    from tavse.synth.noise import write_demand_corpus
    from tests.conftest import tiny_params

    report: dict = {"probe": probe(with_torch=False)}
    p = tiny_params(out)
    # The tiny preset's four speakers (both base photos), one command each; short noise.
    p["synth"]["presets"]["tiny"].update(commands_per_speaker=1)
    p["synth"]["workers"] = 1
    p["synth_noise"].update(duration_s=2.0, channels=1)
    cfg = config_from_dict(p)
    write_corpus(cfg.synth, cfg.data, cfg.seed)
    sn = cfg.synth_noise
    write_demand_corpus(sn.out_dir, sn.environments, sn.duration_s, sn.channels, cfg.seed)
    report["modules"] = sorted(m for m in ("mediapipe", "torch") if m in sys.modules)
    report["digest"] = corpus_digest(out)
    if "ATEN_CPU_CAPABILITY" in os.environ or os.environ.get("TAVSE_PROBE_TORCH"):
        report["probe"] |= probe(with_torch=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1, sort_keys=True))


# ---------------------------------------------------------------------- the test side


def _run(name: str, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {k for s in SELECTIONS.values() for k in s}}
    env.update(SELECTIONS[name], PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if name == "default":
        env["TAVSE_PROBE_TORCH"] = "1"
    res = subprocess.run([sys.executable, __file__, str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, (
        f"{__file__}: building the corpus under {name} {SELECTIONS[name]} failed:\n{res.stderr[-3000:]}"
    )
    return json.loads(Path(f"{out}.json").read_text())


@pytest.fixture(scope="module")
def default_build(tmp_path_factory) -> dict:
    return _run("default", tmp_path_factory.mktemp("cpu") / "default")


def test_default_build_is_complete_and_needs_no_model(default_build: dict) -> None:
    digest = default_build["digest"]
    kinds = {k: sum(1 for m in digest if m.endswith(k)) for k in (".png", ".wav", ".csv")}
    assert kinds[".png"] >= 400 and kinds[".wav"] >= 17 and kinds[".csv"] == 1, kinds
    assert default_build["modules"] == [], f"synthesis imported {default_build['modules']}"


@pytest.mark.parametrize("name", [n for n in SELECTIONS if n != "default"])
def test_same_bytes_under_other_kernels(name: str, default_build: dict, tmp_path: Path) -> None:
    other = _run(name, tmp_path / name)
    key = PROBED[name]
    before, after = default_build["probe"][key], other["probe"][key]
    if before == after:
        pytest.skip(
            f"{SELECTIONS[name]} selects the same {key} kernels as the default on this CPU "
            f"({default_build['probe']['numpy_features']}): nothing to compare"
        )
    a, b = default_build["digest"], other["digest"]
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert not differ, (
        f"under {SELECTIONS[name]} {len(differ)} of {len(a)} corpus files/members differ, e.g. {differ[:5]}"
    )


def test_portable_opencv_runs_baseline_code_and_restores_the_settings() -> None:
    import cv2
    import numpy as np

    from tavse.synth.faces import portable_opencv

    img = np.random.default_rng(1).uniform(0, 1, (60, 80)).astype(np.float32)
    before = (cv2.useOptimized(), cv2.ipp.useIPP(), cv2.ocl.useOpenCL())
    with portable_opencv():
        assert not cv2.useOptimized() and not cv2.ipp.useIPP()
        inside = cv2.GaussianBlur(img, (0, 0), 1.3)
    assert (cv2.useOptimized(), cv2.ipp.useIPP(), cv2.ocl.useOpenCL()) == before
    cv2.setUseOptimized(False)
    try:
        np.testing.assert_array_equal(inside, cv2.GaussianBlur(img, (0, 0), 1.3))
    finally:
        cv2.setUseOptimized(before[0])
        cv2.ipp.setUseIPP(before[1])


def test_rendered_frames_match_recorded_bits() -> None:
    """Frames hash as recorded on an AMD EPYC (AVX2): a CI runner with another CPU checks
    cross-CPU identity. Update RECORDED_FRAMES only together with an intended change of
    the synthesis (the corpus in dvc.lock changes with it)."""
    import numpy as np

    from tavse.synth.faces import make_identity, render_frames

    h = hashlib.sha256()
    for speaker, position in ((1, 1), (2, 5)):  # both base photos, a frontal and a turned head
        rgb, thermal = render_frames(make_identity(speaker, 0), np.array([0.0, 0.4, 1.0]), seed=3, position=position)
        for frame in rgb + thermal:
            h.update(frame.tobytes())
    assert h.hexdigest() == RECORDED_FRAMES


RECORDED_FRAMES = "c19f0d03b440263774f613407bf14f21039834f997f30b3dab78722df0906613"


def test_noise_matches_recorded_bits() -> None:
    """Every synthetic DEMAND environment (espeak babble included) hashes as recorded on an AMD
    EPYC (AVX2): a CI runner with another CPU checks cross-CPU identity of the noise. Update
    RECORDED_NOISE only together with an intended change of the noise synthesis."""
    from tavse.synth.noise import NOISE_ENVIRONMENTS, demand_sample_rate, synth_noise

    h = hashlib.sha256()
    for env in NOISE_ENVIRONMENTS:
        h.update(env.encode())
        h.update(synth_noise(env, 1.0, demand_sample_rate(env), 2, seed=0).tobytes())
    assert len(NOISE_ENVIRONMENTS) == 18 and h.hexdigest() == RECORDED_NOISE


RECORDED_NOISE = "5122afe1c54a579eb763582f7d15438524a9e02c3cd6367211f31990e7977181"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {__file__} OUT_DIR")
    build(Path(sys.argv[1]))
