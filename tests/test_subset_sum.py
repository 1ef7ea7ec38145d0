"""theory subset-sum: exact subset sums, the best error by brute force, Pensia et al.'s pruned network
computes the chosen subset sums, the error falls with n, and the command's printed numbers are its JSON."""

import itertools
import json

import numpy as np
import pytest
import torch

from sketchprune.cli import main
from sketchprune.theory import subset_sum as ss


def test_subset_sums_by_hand():
    w = np.array([0.5, -0.25, 0.125])
    assert ss.subset_sums(w, order="code").tolist() == [0, 0.5, -0.25, 0.25, 0.125, 0.625, -0.125, 0.375]
    assert ss.subset_sums(w).tolist() == sorted([0, 0.5, -0.25, 0.25, 0.125, 0.625, -0.125, 0.375])
    assert ss.subset_of(w, 0.3).tolist() == [True, True, False]  # 0.25 is nearest


def test_best_error_is_the_brute_force_minimum():
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, size=7)
    z = np.linspace(-1, 1, 31)
    err, _ = ss.best_error(ss.subset_sums(w), z)
    brute = [min(abs(t - sum(c)) for r in range(8) for c in itertools.combinations(w, r)) for t in z]
    assert np.allclose(err, brute)


def test_the_pruned_network_computes_the_chosen_subset_sums():
    rng = np.random.default_rng(1)
    W = rng.uniform(-1, 1, size=(3, 2))
    net, info = ss.prune_to_layer(W, 6, rng)
    assert info["width"] == 24 and info["kept"] <= info["total"]
    first = net[0].weight.detach()
    for j in range(2):  # block j keeps only input j
        block = slice(12 * j, 12 * (j + 1))
        assert bool((first[block, 1 - j] == 0).all())
    x = torch.eye(2, dtype=torch.float64)
    for sign in (1.0, -1.0):  # a unit input of either sign reads one side of each block
        out = net(sign * x).detach().numpy() * sign
        assert np.abs(out.T - W).max() <= info["max_weight_error"] + 1e-12


def test_error_falls_with_n_and_the_reading_is_computed():
    cfg = ss.SubsetSumConfig(ns=(2, 6, 10, 14), trials=8, targets=51, units=(2, 8), d_in=3, d_out=3)
    r = ss.run(cfg)
    worst = [row["worst_error"] for row in r["rows"]]
    assert worst == sorted(worst, reverse=True) and worst[-1] < 0.05 * worst[0]
    assert 0.3 < r["fit"]["factor_per_weight"] < 0.9  # exponential, no faster than the counting limit 1/2
    first = next(row["n"] for row in r["rows"] if row["worst_error"] <= cfg.eps)
    assert r["reading"]["n_for_eps"] == first and f"at n = {first}" in r["reading"]["text"]
    assert r["layer"][-1]["relative_error"] < r["layer"][0]["relative_error"]


def test_printed_numbers_equal_json(tmp_path, capsys):
    args = ["theory", "subset-sum", "--out", str(tmp_path), "--ns", "2,4,8", "--trials", "3", "--targets", "11",
            "--units", "2,4", "--d-in", "2", "--d-out", "2", "--samples", "50"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    on_disk = json.loads((tmp_path / "subset-sum.json").read_text())
    assert result["rows"] == on_disk["rows"] and result["reading"] == on_disk["reading"]
    assert result["reading"]["text"] in printed and (tmp_path / "subset-sum.png").exists()
    assert main(["theory", "subset-sum", "--out", str(tmp_path), "--ns", "40"]) == 2


@pytest.mark.parametrize("flag,value", [("--eps", "2"), ("--trials", "0"), ("--units", "0")])
def test_bad_settings_give_one_line(tmp_path, flag, value, capsys):
    assert main(["theory", "subset-sum", "--out", str(tmp_path), flag, value]) == 2
    assert capsys.readouterr().err.count("\n") == 1
