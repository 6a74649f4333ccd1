"""benchmarks/table1_study.py's job table: the CGaP variants run on every seed, and the Taylor
pruning-only runs matched to a variant prune to that variant's counts and fine-tune from its
learning rate for the same number of epochs as the other pruning-only rows. No training here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import table1_study  # noqa: E402


def _args(**over) -> argparse.Namespace:
    base = dict(epochs=30, seeds=[0, 1, 2], equal_seeds=[0], flops_epochs=5, more_tries=True, seed_width=0.25,
                target=7900, tau_accu=0.985, variants=["keeplr05", "keepft45"], match=["keeplr05"], match_flops=False,
                train_limit=None, test_limit=None)
    return argparse.Namespace(**{**base, **over})


def test_variants_run_on_every_seed_and_seed_0_reuses_the_tried_job():
    jobs = table1_study.job_table(_args())
    assert "var_keeplr05_s0" not in jobs  # the same settings as try_keeplr05_s0
    assert jobs["try_keeplr05_s0"][2]["over"] == table1_study.variants(30)["keeplr05"][1]
    for k in (1, 2):
        kind, deps, s = jobs[f"var_keeplr05_s{k}"]
        assert (kind, deps, s["seed"], s["over"]["restart_lr"]) == ("cgap", [], k, 0.05)
    for k in (0, 1, 2):
        over = jobs[f"var_keepft45_s{k}"][2]["over"]
        # 45 epochs, pruning over the same epochs as the 30-epoch run (9 to 18)
        assert over["epochs"] == 45
        assert (round(over["prune_start"] * 45), round(over["prune_end"] * 45)) == (9, 18)


def test_matched_taylor_prunes_to_the_variant_and_fine_tunes_from_its_lr():
    jobs = table1_study.job_table(_args())
    assert jobs["taylorm_keeplr05_s0"][1] == ["base30_s0", "try_keeplr05_s0"]
    for k in (1, 2):
        kind, deps, s = jobs[f"taylorm_keeplr05_s{k}"]
        assert (kind, deps, s["ft_epochs"], s["ft_lr"]) == ("taylor", [f"base30_s{k}", f"var_keeplr05_s{k}"], 15, 0.05)
        kind, deps, s = jobs[f"taylorme_keeplr05_s{k}"]  # equal total epochs: a 15-epoch baseline + 15
        assert (deps, s["ft_epochs"], s["ft_lr"]) == ([f"base15_s{k}", f"var_keeplr05_s{k}"], 15, 0.05)
        assert jobs[f"base15_s{k}"] == ("baseline", [], {"seed": k, "epochs": 15})


def test_matched_taylor_at_equal_training_flops_starts_from_the_short_baseline():
    assert not any(j.startswith("taylormf_") for j in table1_study.job_table(_args()))
    jobs = table1_study.job_table(_args(match_flops=True))
    for k in (0, 1, 2):
        kind, deps, s = jobs[f"taylormf_keeplr05_s{k}"]  # a 5-epoch baseline + 15 epochs from lr 0.05
        var = "try_keeplr05_s0" if k == 0 else f"var_keeplr05_s{k}"
        assert (kind, deps, s["ft_epochs"], s["ft_lr"]) == ("taylor", [f"base5_s{k}", var], 15, 0.05)
        assert jobs[f"base5_s{k}"] == ("baseline", [], {"seed": k, "epochs": 5})


def test_unknown_variant_is_a_key_error():
    with pytest.raises(KeyError):
        table1_study.job_table(_args(variants=["nonesuch"], match=[]))
