"""The ablation plan of ablations.yaml: the experiments it makes, and bad entries named."""

from pathlib import Path

import pytest
import yaml

from tavse.common.config import ConfigError
from tavse.study import ablations
from tests.conftest import ROOT


def _write(tmp_path: Path, spec: dict) -> Path:
    p = tmp_path / "ablations.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_the_repository_plan_covers_the_guide():
    exps = ablations.plan(ROOT / "ablations.yaml", ROOT / "params.yaml")
    by_set = {}
    for e in exps:
        by_set.setdefault(e.set, []).append(e)
    seeds = yaml.safe_load((ROOT / "ablations.yaml").read_text())["seeds"]
    assert len(by_set["seeds"]) == len(seeds)
    assert len(by_set["fusion"]) == 3 * len(seeds) and len(by_set["modality_dropout"]) == 3 * len(seeds)
    concat = next(e for e in by_set["fusion"] if e.name == f"fusion-concat-s{seeds[0]}")
    assert concat.overrides == {
        "train.seed": seeds[0],
        "variants.audio_rgb.fusion": "concat",
        "variants.audio_thermal.fusion": "concat",
        "variants.audio_rgb_thermal.fusion": "concat",
    }
    assert concat.set_args()[:2] == ["-S", f"train.seed={seeds[0]}"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    to_run, same = ablations.split_runs(exps, params)
    # The workspace's own setting appears once per set (its seed), never queued; each set's default
    # value at the other seeds is the seeds set's experiment of that seed, not queued twice.
    equal = {e.name: other for e, other in same}
    assert [n for n, o in equal.items() if o == "the workspace"] == [
        f"seeds-s{seeds[0]}",
        f"fusion-film-s{seeds[0]}",
        f"modality_dropout-0.0-s{seeds[0]}",
    ]
    for seed in seeds[1:]:
        assert equal[f"fusion-film-s{seed}"] == equal[f"modality_dropout-0.0-s{seed}"] == f"seeds-s{seed}"
    assert len(to_run) + len(same) == len(exps) == len({e.name for e in exps})
    assert len(to_run) == len(exps) - 3 * len(seeds) + (len(seeds) - 1)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"seeds": [1], "sets": {"x": {"variants": ["audio_rgb"], "vary": {"fusion": ["bogus"]}}}},
            "experiment x-bogus-s1",
        ),
        (
            {"seeds": [1], "sets": {"x": {"variants": ["audio_video"], "vary": {"fusion": ["film"]}}}},
            "'audio_video' is not a variant",
        ),
        ({"seeds": [1], "sets": {"x": {"variants": ["audio_rgb"], "vary": {"lr": [0.1]}}}}, "sets.x.vary"),
        (
            {"seeds": [1], "sets": {"x": {"variants": ["audio_rgb_thermal"], "vary": {"modality_dropout": [1.5]}}}},
            "modality_dropout",
        ),
        ({"seeds": [], "sets": {}}, "seeds must be"),
        ({"seeds": [1], "sets": {}, "extra": 1}, "unknown key"),
    ],
)
def test_bad_entries_are_named(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        ablations.plan(_write(tmp_path, spec), ROOT / "params.yaml")


def test_an_unknown_set_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no set 'nope'"):
        ablations.plan(ROOT / "ablations.yaml", ROOT / "params.yaml", ["nope"])


def test_seeds_given_replace_the_files_seeds():
    exps = ablations.plan(ROOT / "ablations.yaml", ROOT / "params.yaml", ["fusion"], seeds=[1])
    assert [e.name for e in exps] == ["fusion-cross_attention-s1", "fusion-concat-s1", "fusion-film-s1"]
    with pytest.raises(ConfigError, match="seeds must be"):
        ablations.plan(ROOT / "ablations.yaml", ROOT / "params.yaml", ["fusion"], seeds=[-1])
