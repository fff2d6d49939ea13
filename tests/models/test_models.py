"""TAVSE model: shapes per variant, parts per variant, fusion types, time alignment, modality dropout, gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import tavse.models.fusion as fusion_module
from tavse.common.config import VariantConfig, load_config
from tavse.models import TAVSE, draw_stream_keep, parameter_counts
from tavse.models.summary import main as summary_main

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config(ROOT / "params.yaml")
SMALL = dataclasses.replace(CFG.model, size="small")
ROI = CFG.ingest.roi_size
VARIANTS = {name: v.streams for name, v in CFG.variants.items()}
RGB_THERMAL = ["rgb", "thermal"]


DEFAULT_FUSION = CFG.variants["audio_rgb_thermal"].fusion


def spec(streams, fusion: str = DEFAULT_FUSION, modality_dropout: float = 0.0) -> VariantConfig:
    """A variant seeing ``streams`` (fused with ``fusion`` when it has any)."""
    streams = list(streams)
    return VariantConfig(streams, fusion if streams else None, modality_dropout)


def inputs(batch: int, frames: int, roi: int = ROI, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Noisy waveform (batch, frames * 16000 / 28) and RGB/thermal clips of ``frames`` frames."""
    g = torch.Generator().manual_seed(seed)
    n = frames * 16000 // 28
    noisy = 0.1 * torch.randn(batch, n, generator=g)
    visual = {
        "rgb": torch.rand(batch, frames, 3, roi, roi, generator=g),
        "thermal": torch.rand(batch, frames, 1, roi, roi, generator=g),
    }
    return noisy, visual


def check_outputs(out: dict, modalities: list[str], batch: int, n: int) -> None:
    assert out["enhanced"].shape == (batch, n) and out["enhanced"].dtype == torch.float32
    assert out["mask"].shape == (batch, SMALL.n_fft // 2 + 1, n // SMALL.hop_length + 1)
    assert bool(((out["mask"] > 0) & (out["mask"] < 1)).all())
    assert torch.isfinite(out["enhanced"]).all()
    if len(modalities) > 1:
        assert list(out["gates"]) == modalities
        for g in out["gates"].values():
            assert g.shape == (batch,) and bool(((g > 0) & (g < 1)).all())
    else:
        assert out["gates"] == {}


@pytest.mark.parametrize("frames", [70, 35])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_parts_of_every_variant(variant: str, frames: int) -> None:
    modalities = VARIANTS[variant]
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(modalities), ROI).eval()
    noisy, visual = inputs(2, frames)
    with torch.no_grad():
        check_outputs(model(noisy, visual), modalities, 2, noisy.shape[1])

    # Only the parts the variant uses exist, and the per-part counts add up.
    prefixes = {
        name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("visual.") else "")
        for name, _ in model.named_parameters()
    }
    expected = {"unet"} | {f"visual.{m}" for m in modalities} | ({"fusion"} if modalities else set())
    assert prefixes == expected
    counts = parameter_counts(model)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    for m in ("rgb", "thermal"):
        assert (counts[f"visual_{m}"] > 0) == (m in modalities)
    assert (counts["fusion"] > 0) == bool(modalities)


def test_audio_only_takes_no_visual_input() -> None:
    model = TAVSE(SMALL, spec([]), ROI).eval()
    noisy, _ = inputs(1, 14)
    with torch.no_grad():
        assert model(noisy)["enhanced"].shape == noisy.shape


@pytest.mark.parametrize("modalities", [["thermal"], RGB_THERMAL])
@pytest.mark.parametrize("fusion", ["cross_attention", "concat", "film"])
def test_every_fusion_type(fusion: str, modalities: list[str]) -> None:
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(modalities, fusion=fusion), ROI)
    noisy, visual = inputs(2, 35)
    check_outputs(model(noisy, visual), modalities, 2, noisy.shape[1])  # training mode


def test_variants_start_as_the_audio_only_model() -> None:
    # U-Net built first + zero-initialised fusion residual: same seed → same output at step 0.
    noisy, visual = inputs(2, 14)
    outs = []
    for modalities in VARIANTS.values():
        torch.manual_seed(7)
        outs.append(TAVSE(SMALL, spec(modalities), ROI)(noisy, visual)["enhanced"])
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=0, atol=0)


def test_paper_size_forward() -> None:
    cfg = dataclasses.replace(CFG.model, size="paper")
    torch.manual_seed(0)
    model = TAVSE(cfg, spec(RGB_THERMAL), 96).eval()
    counts = parameter_counts(model)
    print("paper-size audio_rgb_thermal parameters:", counts)
    assert counts["visual_rgb"] > 11_000_000 and counts["visual_thermal"] > 11_000_000  # ResNet-18 trunks
    noisy, visual = inputs(1, 14, roi=96)
    with torch.no_grad():
        out = model(noisy, visual)
    assert out["enhanced"].shape == (1, 8000)
    assert out["mask"].shape == (1, 257, 51)
    assert list(out["gates"]) == RGB_THERMAL


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="subset"):
        TAVSE(SMALL, spec(["thermal", "rgb"]), ROI)
    with pytest.raises(ValueError, match="subset"):
        TAVSE(SMALL, spec(["depth"]), ROI)
    model = TAVSE(SMALL, spec(RGB_THERMAL), ROI).eval()
    noisy, visual = inputs(1, 14)
    with pytest.raises(KeyError, match="thermal"):
        model(noisy, {"rgb": visual["rgb"]})
    with pytest.raises(ValueError, match="expected frames"):
        model(noisy, {"rgb": visual["rgb"][..., :32, :32], "thermal": visual["thermal"]})


# --- modality dropout ---------------------------------------------------------------------------


def test_modality_dropout_never_drops_everything_and_has_the_expected_rate() -> None:
    torch.manual_seed(0)
    p, n = 0.3, 200_000
    keep = draw_stream_keep(n, 2, p)
    assert bool(keep.any(dim=1).all())
    # Each stream is drawn for dropping with probability p; when both are drawn (p^2) one of
    # the two is kept, so the realised drop rate per stream is p - p^2/2.
    rate = 1 - keep.float().mean(dim=0)
    assert torch.allclose(rate, torch.full((2,), p - p * p / 2), atol=0.005)
    assert bool(draw_stream_keep(1000, 1, 0.9).all())  # a single stream is never dropped


def test_modality_dropout_in_the_model() -> None:
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(RGB_THERMAL, modality_dropout=0.5), ROI)
    noisy, visual = inputs(1, 14)
    # Find a seed that drops RGB for this one sample; the draw comes from the global RNG.
    for seed in range(100):
        torch.manual_seed(seed)
        keep = model(noisy, visual)["stream_keep"]
        if not keep["rgb"] and keep["thermal"]:
            break
    else:
        pytest.fail("RGB was never dropped at p=0.5")
    # Same RNG state → same draw, and a dropped stream has no influence on the output.
    other = dict(visual, rgb=torch.rand_like(visual["rgb"]))
    torch.manual_seed(seed)
    a = model(noisy, visual)["enhanced"]
    torch.manual_seed(seed)
    b = model(noisy, other)["enhanced"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)

    model.eval()  # off in evaluation: nothing dropped, no random numbers consumed
    state = torch.get_rng_state()
    with torch.no_grad():
        keep = model(noisy, visual)["stream_keep"]
    assert all(bool(k.all()) for k in keep.values())
    assert torch.equal(state, torch.get_rng_state())


# --- time alignment -----------------------------------------------------------------------------


def calibrated(model: TAVSE, noisy: torch.Tensor, visual: dict[str, torch.Tensor]) -> TAVSE:
    """Eval-mode model whose BatchNorm statistics come from this input (fresh ones are not normalising).

    Eval mode keeps BatchNorm pointwise in time, so only the fusion can move information across time.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the exact statistics
    with torch.no_grad():
        model.train()(noisy, visual)
    return model.eval()


def half_change_ratio(fusion: str) -> float:
    """Mask change in the first half / second half when only the second half of the video changes."""
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(RGB_THERMAL, fusion=fusion), ROI)
    with torch.no_grad():
        model.fusion.scale.fill_(1.0)  # the residual starts at 0, i.e. without any visual effect
    noisy, visual = inputs(1, 70)
    model = calibrated(model, noisy, visual)
    changed = {k: v.clone() for k, v in visual.items()}
    for v in changed.values():
        v[:, 35:] = 0.0  # the camera goes dark halfway through
    with torch.no_grad():
        diff = (model(noisy, visual)["mask"] - model(noisy, changed)["mask"]).abs().mean(dim=(0, 1))
    half = diff.shape[0] // 2
    first, second = diff[:half].mean().item(), diff[half:].mean().item()
    assert second > 1e-4, "the visual change had no effect at all"
    return first / second


@pytest.mark.parametrize("fusion", ["cross_attention", "concat", "film"])
def test_fusion_is_aligned_in_time(fusion: str) -> None:
    assert half_change_ratio(fusion) < 0.2


def test_the_alignment_check_catches_globally_pooled_fusion(monkeypatch: pytest.MonkeyPatch) -> None:
    # Replace the timestamp interpolation by a mean over all frames: every audio step then
    # sees the same pooled video, and the change spreads evenly over both halves.
    monkeypatch.setattr(fusion_module, "interpolation_matrix", lambda pos, n: torch.full((pos.shape[0], n), 1.0 / n))
    assert half_change_ratio("cross_attention") > 0.5


def test_interpolation_follows_timestamps() -> None:
    # 4 video frames over 4 * 160 * 3.5 samples: STFT frame j sits at video frame j/3.5 - 0.5.
    pos = fusion_module.frame_positions(15, 4, 2240, 160)
    assert pos[0].item() == pytest.approx(-0.5) and pos[7].item() == pytest.approx(1.5)
    frames = torch.arange(4.0).view(1, 4, 1)
    aligned = (fusion_module.interpolation_matrix(pos, 4) @ frames).flatten()
    torch.testing.assert_close(aligned, pos.clamp(0, 3))  # a linear ramp is reproduced exactly


# --- gradients, determinism, CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, fusion",
    [(v, "cross_attention") for v in VARIANTS] + [("audio_rgb_thermal", "concat"), ("audio_rgb_thermal", "film")],
)
def test_gradient_reaches_every_parameter(variant: str, fusion: str) -> None:
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(VARIANTS[variant], fusion=fusion), ROI)
    noisy, visual = inputs(2, 14)
    clean = noisy.roll(1, dims=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    # Two steps: the fusion residual scale starts at 0, so the weights behind it get their
    # first non-zero gradient once the scale has moved.
    for _ in range(2):
        opt.zero_grad()
        loss = (model(noisy, visual)["enhanced"] - clean).pow(2).mean()
        loss.backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_deterministic_given_the_seed() -> None:
    noisy, visual = inputs(2, 14)

    def run() -> torch.Tensor:
        torch.manual_seed(3)
        model = TAVSE(SMALL, spec(RGB_THERMAL, modality_dropout=0.4), ROI)
        with torch.no_grad():
            model.fusion.scale.fill_(0.5)
        return model(noisy, visual)["enhanced"]

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_summary_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert summary_main(["--size", "small", "--params", str(ROOT / "params.yaml")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == [
        "variant",
        "audio_unet",
        "audio_temporal",
        "visual_rgb",
        "visual_thermal",
        "fusion",
        "total",
    ]
    assert [line.split()[0] for line in lines[2:]] == list(VARIANTS)
    # A fair comparison: every variant has the same audio path, temporal model included.
    assert len({tuple(line.split()[1:3]) for line in lines[2:]}) == 1
    assert summary_main(["--size", "huge", "--params", str(ROOT / "params.yaml")]) == 2


def test_bottleneck_steps_sit_on_every_fourth_stft_frame():
    """The U-Net halves time twice: bottleneck step j is centred on STFT frame 4j (the fusion relies on it)."""
    unet = TAVSE(SMALL, spec(()), ROI).unet.eval()
    assert unet.bottleneck_hop == 4 * SMALL.hop_length
    x = torch.randn(1, 1, unet.n_bins, 251, generator=torch.Generator().manual_seed(0)).requires_grad_()
    bottleneck, _ = unet.encode(x)
    assert bottleneck.shape[-1] == 63  # ceil(251 / 4): 25 steps/s at hop 160
    for j in (5, 30, 57):
        (grad,) = torch.autograd.grad(bottleneck[..., j].abs().sum(), x, retain_graph=True)
        influence = grad.abs().sum(dim=(0, 1, 2))  # per STFT frame
        centre = float((influence * torch.arange(251)).sum() / influence.sum())
        assert abs(centre - 4 * j) < 1.0, (j, centre)


def test_precision_choices_and_a_bf16_step():
    from tavse.training.loop import autocast, cpu_has_bf16_units, device_setup

    cpu = torch.device("cpu")
    assert device_setup(cpu, "fp32") == (cpu, None, False)
    assert device_setup(cpu, "bf16") == (cpu, torch.bfloat16, False)
    assert device_setup(cpu, "auto")[1] == (torch.bfloat16 if cpu_has_bf16_units() else None)
    with pytest.raises(ValueError, match="train.precision"):
        device_setup(cpu, "fp8")
    # The mixed-precision path GPUs take, exercised on the CPU: outputs and loss stay float32.
    torch.manual_seed(0)
    model = TAVSE(SMALL, spec(("rgb", "thermal")), ROI)
    noisy, visual = inputs(2, 35)
    with autocast(cpu, torch.bfloat16):
        out = model(noisy, visual)
    assert out["enhanced"].dtype == out["mask"].dtype == torch.float32
    loss = -out["enhanced"].pow(2).mean()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
