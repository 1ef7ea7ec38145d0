"""Theory lab (theory/, E1-E7): printed numbers equal the JSON, formulas vs Monte Carlo, claims, bad data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError
from sketchprune.pruning import score
from sketchprune.cli import main
from sketchprune.tables import format_table
from sketchprune.theory import e3_data as e3
from sketchprune.theory import e4_deep_linear as e4
from sketchprune.theory import e2_linear as e2
from sketchprune.theory import e6_ntk as e6
from sketchprune.theory import e1_sketch as e1
from sketchprune.theory import e7_structured as e7
from sketchprune.theory.common import load_table

SMALL = {
    "sketch": ["--trials", "30", "--n", "40", "--budgets", "5,10"],
    "linear": ["--n", "60", "--d", "30", "--draws", "20", "--steps", "50", "--ratios", "1,2", "--scales", "1"],
    "data": ["--n", "60", "--d", "30"],
    "deep-linear": ["--depth", "3", "--width", "8", "--d-in", "8", "--n", "32", "--draws", "4"],
    "ntk": ["--n", "4", "--width", "8", "--trials", "10"],
    "structured": ["--n", "32", "--width", "16", "--budgets", "4,8", "--trials", "30"],
}


@pytest.mark.parametrize("name", list(SMALL))
def test_printed_numbers_equal_json(name, tmp_path, capsys):
    args = ["theory", name, "--out", str(tmp_path)] + SMALL[name]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    on_disk = json.loads((tmp_path / f"{name}.json").read_text())
    assert on_disk["rows"] == result["rows"]
    # the main table is printed exactly as format_table renders the JSON values
    columns = {"sketch": e1.TABLE_COLUMNS, "linear": e2.TABLE_COLUMNS, "data": e3.TABLE_COLUMNS,
               "deep-linear": e4.TABLE_COLUMNS, "ntk": e6.TABLE_COLUMNS, "structured": e7.TABLE_COLUMNS}[name]
    assert format_table(result["rows"], columns) in printed
    # the reading comes last, is the JSON's, and quotes the run's own numbers
    assert printed.rstrip().endswith(result["reading"]["text"]) and on_disk["reading"] == result["reading"]
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_e7_unit_sampling_matches_the_exact_formulas_and_optimal_wins():
    r = e7.run(e7.StructuredConfig(n=64, width=48, budgets=(4, 12, 24), trials=600))
    for row in r["rows"]:  # 4.5 standard errors: a miss by chance is below 1e-5 per cell
        assert abs(row["mc_mean"] - row["exact"]) <= 4.5 * row["ci99"] / 2.576, row
    err = {(x["probs"], x["scheme"], x["units"]): x["exact"] for x in r["rows"]}
    for (_, scheme, k) in [key for key in err if key[0] == "optimal" and key[1] == "iid"]:
        assert err[("optimal", scheme, k)] <= min(err[("uniform", scheme, k)], err[("l1", scheme, k)])  # DKM
    assert r["reading"]["cells"] == len(r["rows"]) and f"{r['reading']['formula_matches']} of" in r["reading"]["text"]


def test_e7_formula_misses_a_planted_error():
    # the comparison can fail: a formula off by 10 % is outside the interval in most cells
    r = e7.run(e7.StructuredConfig(n=64, width=48, budgets=(12,), trials=600))
    assert sum(abs(x["mc_mean"] - 1.1 * x["exact"]) > 4.5 * x["ci99"] / 2.576 for x in r["rows"]) >= 5


def test_e2_reading_says_when_the_init_mask_wins():
    kw = dict(draws=2, steps=100, ratios=(0.5, 1.0, 2.0), scales=(0.1, 10.0), densities=(0.1, 0.3))  # 6 cells a scale
    by_norm = e2.run(e2.LinearConfig(**kw))["reading"]
    equal = e2.run(e2.LinearConfig(contributions="equal", **kw))["reading"]
    a, b = by_norm["trained_optimal_over_random_by_scale"], equal["trained_optimal_over_random_by_scale"]
    # a target that grows with the feature norms: the init-optimal mask trains to a lower loss than random's;
    # every feature alike: no real advantage (a tie within noise)
    assert max(a.values()) < 0.85 and min(b.values()) > 0.85
    assert "it beats random at init scale 0.1; beats random at init scale 10" in by_norm["text"]
    assert "beats" not in equal["text"].split("sign test")[1].split(".")[0]


def test_e2_formulas_match_monte_carlo_and_bound_holds_on_every_draw():
    for seed in range(4):
        r = e2.run(e2.LinearConfig(n=80, d=40, draws=300, steps=100, seed=seed, ratios=(), densities=(0.2, 0.5)))
        for row in r["rows"]:
            se = row["final_ci99"] / 2.576
            assert abs(row["final_mc"] - row["final_exact"]) <= 4.5 * se + 1e-9, row
            assert abs(row["init_mc"] - row["init_exact"]) <= 4.5 * row["init_ci99"] / 2.576 + 1e-9, row
            assert row["bound_holds"] == 1.0  # SPEC 3.3: the retraining bound holds on every draw
            assert row["iid_final"] <= row["beta_bound"] * (1 + 1e-9)


def test_e3_standardizing_makes_data_free_optimal():
    r = e3.run(e3.DataConfig(n=100, d=40))
    tv = {p["features"]: p["tv_magnitude_vs_optimal"] for p in r["probabilities"]}
    assert tv["standardized"] < 1e-12 and tv["raw"] > 0.05
    for row in r["rows"]:
        if row["features"] == "standardized":
            assert row["magnitude_over_optimal"] == pytest.approx(1.0, rel=1e-9)
            assert row["jaccard_topk_mag_opt"] == 1.0 and row["jaccard_sampled_mag_opt"] == 1.0


def test_e4_synflow_closed_form_equals_the_scorer():
    cfg = e4.DeepLinearConfig(depth=4, width=6, d_in=5, d_out=3, n=16)
    gen = torch.Generator().manual_seed(0)
    dims = [5, 6, 6, 6, 3]
    Ws = [torch.randn(b, a, generator=gen, dtype=torch.float64) for a, b in zip(dims[:-1], dims[1:])]
    closed = e4.scores(Ws, torch.randn(16, 5, generator=gen, dtype=torch.float64))["synflow"]
    model = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])]).double()
    with torch.no_grad():
        for m, W in zip(model, Ws):
            m.weight.copy_(W)
    got = score(model, "synflow", input_shape=(5,))
    scale = max(float(c.max()) for c in closed)
    top = max(float(s.max()) for s in got.values())
    for c, (_, s) in zip(closed, got.items()):
        assert torch.allclose(s / top, c / scale, rtol=1e-10, atol=1e-14)
    assert cfg.depth == 4


def test_e4_whitening_makes_scores_data_free():
    r = e4.run(e4.DeepLinearConfig(depth=3, width=8, d_in=8, n=64, whiten=True, draws=2))
    pair = next(c for c in r["correlations"] if (c["a"], c["b"]) == ("optimal", "whitened"))
    assert pair["spearman_pooled"] == pytest.approx(1.0, abs=1e-9)


def test_e6_iid_formula_matches_monte_carlo_and_optimal_constant():
    r = e6.run(e6.NTKConfig(n=6, width=16, trials=400, densities=(0.05, 0.2)))
    for row in r["rows"]:
        if row["method"] != "topk":
            assert abs(row["mc_mean"] - row["exact"]) <= 4.5 * row["ci99"] / 2.576, row
    opt = [row for row in r["rows"] if row["method"] == "sampled"]
    for row in opt:  # optimal sampling: (trace^2 - ||Theta||_F^2) / c
        assert row["exact"] == pytest.approx(r["optimal_constant"] / row["budget"], rel=1e-9)


def _csv(tmp_path, text):
    p = tmp_path / "d.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, target, msg",
    [
        ("a,b,y\n1,2,3\n4,x,6\n", "y", "line 3, column 'b'"),
        ("a,b,y\n1,2,3\n4,nan,6\n", "y", "line 3, column 'b'"),
        ("a,b,y\n1,2,3\n4,5,6\n", "z", "no target column 'z'"),
        ("a,b,y\n1,2,3\n", "y", "at least 2"),
        ("a,b,y\n1,2,3\n4,5\n", "y", "line 3: 2 fields"),
    ],
)
def test_bad_csv_data(tmp_path, text, target, msg):
    with pytest.raises(SketchpruneError, match=msg):
        load_table(_csv(tmp_path, text), target)


def test_npz_data_and_mismatched_lengths(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, X=np.ones((5, 3)), y=np.ones(4))
    with pytest.raises(SketchpruneError, match="5 rows but y has 4"):
        load_table(p, "")
    np.savez(p, X=np.random.default_rng(0).normal(size=(30, 6)), y=np.ones(30))
    X, y, names = load_table(p, "")
    assert X.shape == (30, 6) and names[0] == "x0"


def test_e2_runs_on_user_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    lines = ["f1,f2,f3,f4,f5,price"] + [",".join(map(str, row)) + f",{row.sum():.6f}" for row in X]
    p = _csv(tmp_path, "\n".join(lines) + "\n")
    assert main(["theory", "linear", "--data", str(p), "--target", "price", "--draws", "10", "--out",
                 str(tmp_path / "o"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sweep"] == [] and len(result["rows"]) == 3 * 4


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["binary"] = tmp_path / "bin.csv"
    files["binary"].write_bytes(bytes(range(256)) * 4)
    files["directory"] = tmp_path / "adir.csv"
    files["directory"].mkdir()
    files["objects"] = tmp_path / "obj.npz"
    np.savez(files["objects"], X=np.array([[1, "a"], [2, "b"]], dtype=object), y=np.array([1.0, 2.0]))
    files["y2d"] = tmp_path / "y2d.npz"
    np.savez(files["y2d"], X=np.ones((4, 3)), y=np.ones((4, 2)))
    files["notzip"] = tmp_path / "notzip.npz"
    files["notzip"].write_text("hello")
    good = tmp_path / "good.npz"
    np.savez(good, X=np.random.rand(50, 3), y=np.random.rand(50))
    files["truncated"] = tmp_path / "trunc.npz"
    files["truncated"].write_bytes(good.read_bytes()[:300])
    files["complex"] = tmp_path / "complex.npz"
    np.savez(files["complex"], X=np.ones((4, 3)) * (1 + 2j), y=np.ones(4))
    files["duplicated"] = tmp_path / "dup.csv"
    files["duplicated"].write_text("a,y,y\n1,2,3\n4,5,6\n7,8,9\n")
    return files


@pytest.mark.parametrize("case", ["binary", "directory", "objects", "y2d", "notzip", "truncated", "complex",
                                  "duplicated"])
def test_theory_data_files_that_are_wrong_give_one_line(case, tmp_path, cli_error):
    path = _bad_files(tmp_path)[case]
    rc = main(["theory", "linear", "--data", str(path), "--target", "y", "--draws", "2", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = cli_error()
    assert str(path.name) in err


@pytest.mark.parametrize("args", [["theory", "sketch", "--n", "0"], ["theory", "linear", "--n", "0"],
                                  ["theory", "ntk", "--trials", "0"], ["theory", "deep-linear", "--width", "0"],
                                  ["theory", "data", "--draws", "1"]])
def test_theory_sizes_out_of_range_give_one_line(args, tmp_path, cli_error):
    assert main(args + ["--out", str(tmp_path)]) == 2
    cli_error()
    assert not any(tmp_path.iterdir())
