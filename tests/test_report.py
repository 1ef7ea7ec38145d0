"""Reports (report.py): tables against hand computations, the figures and files, the page in a real browser."""

import csv
import json
import math
import os
import shutil
import subprocess
import statistics
import sys
from pathlib import Path

import pytest

from sketchprune import SketchpruneError
from sketchprune.cli import main
from sketchprune.report import collapse_case, paired_differences, pivot_tables, summarize
from sketchprune.results import collect

SWEEP = """
fixed: {model: mlp, dataset: digits, model_options: {width: 24},
        train: {epochs: 2, optimizer: adam, lr: 0.003, weight_decay: 0.0, batch_size: 128}}
grids:
  - method: [magnitude, synflow]
    mode: [topk, sample, auto]
    compression: [3, 30]
    seed: [0, 1, 2]
  - method: [random]
    density: [1.0]
    seed: [0, 1, 2]
"""


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    cfg = root / "s.yaml"
    cfg.write_text(SWEEP)
    assert main(["sweep", str(cfg), "--out", str(root / "out"), "--workers", "2"]) == 0
    return root / "out"


def test_summary_and_paired_tables_equal_a_hand_computation(sweep_dir):
    results = collect(sweep_dir)
    summary = summarize(results)
    acc = {}
    for r in results:
        c = r.config
        acc.setdefault((c["method"], c["mode"], c["density"]), {})[c["seed"]] = r.final_test_acc
    row = next(r for r in summary if (r["method"], r["mode"]) == ("magnitude", "sample") and r["compression"] > 10)
    vals = list(acc[("magnitude", "sample", row["density"])].values())
    assert row["mean"] == pytest.approx(statistics.fmean(vals))
    assert row["ci95"] == pytest.approx(4.303 * statistics.stdev(vals) / math.sqrt(3))
    dense = next(r for r in summary if r["method"] == "dense")
    assert dense["seeds"] == 3 and dense["density"] == 1.0
    paired = paired_differences(results)
    p = next(r for r in paired if r["method"] == "synflow" and r["versus"] == "auto - topk" and r["compression"] > 10)
    a, b = acc[("synflow", "auto", p["density"])], acc[("synflow", "topk", p["density"])]
    assert p["diff"] == pytest.approx(statistics.fmean([a[s] - b[s] for s in a]))
    md = pivot_tables(summary, paired, summary[0]["setting"])
    assert md.count("### ") == 3 and md.count("**") >= 2  # a table per mode, a bold best per column


def test_collapse_view_picks_the_case_where_the_modes_accuracies_differ_most(sweep_dir):
    results = collect(sweep_dir)
    setting = summarize(results)[0]["setting"]
    method, density, modes = collapse_case(results, setting)
    # the gap between the best and the worst mode's mean accuracy, by hand: the chosen case has the largest
    def gap(m, d):
        acc = {}
        for r in results:
            c = r.config
            if (c["method"], c["density"]) == (m, d):
                acc.setdefault(c["mode"], []).append(r.final_test_acc)
        means = [statistics.fmean(v) for v in acc.values()]
        return max(means) - min(means)

    cases = {(r.config["method"], r.config["density"]) for r in results
             if r.config["density"] < 1 and r.config["method"] != "random"}
    assert gap(method, density) == pytest.approx(max(gap(m, d) for m, d in cases))
    assert set(modes) == {"topk", "sample", "auto"}


def test_report_files_and_figures(sweep_dir, capsys):
    assert main(["report", str(sweep_dir), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    for key in ("accuracy_png", "differences_png", "collapse_png"):
        assert Path(rep["files"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (sweep_dir / "report" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 * 2 * 3 + 3 and "log10_paths" in rows[0] and "auto_mode" in rows[0]
    diag = (sweep_dir / "report" / "diagnostics.csv").read_text().splitlines()
    assert len(diag) == 1 + 2 and diag[0].startswith("setting,compression,runs,rho_min_layer_density")
    page = Path(rep["files"]["html"]).read_text()
    assert page.count("data:image/png;base64,") == 3 and "http://" not in page and "https://" not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SELF_CHECK = ("<script>window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);"
              "var ok=i.every(function(x){return x.complete&&x.naturalWidth>0});"
              "document.body.setAttribute('data-images',ok?'ok':'broken');});</script>")


def with_self_check(page: Path, out: Path) -> Path:
    """A copy of ``page`` whose body records, once loaded, whether every image loaded (data-images)."""
    text = page.read_text()
    assert text.count("</body>") == 1
    out.write_text(text.replace("</body>", SELF_CHECK + "</body>"))
    return out


def render(page: Path, tmp_path: Path) -> tuple[str, str]:
    """The DOM after load and the browser's log, from headless Chromium (as the env notes start it)."""
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    return r.stdout, r.stderr


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("SKETCHPRUNE_REQUIRE_BROWSER"),
                    reason="needs Debian's chromium (.ci/run installs it)")
def test_the_page_renders_in_a_real_browser(sweep_dir, tmp_path):
    assert CHROMIUM, "chromium is missing: apt-get install chromium (.ci/run does)"
    main(["report", str(sweep_dir)])
    page = with_self_check(sweep_dir / "report" / "report.html", tmp_path / "page.html")
    dom, log = render(page, tmp_path)
    assert 'data-images="ok"' in dom, "an image did not load"
    assert "Uncaught" not in log, log[-2000:]
    # the checks can fail: a broken image and a throwing script are caught
    bad = tmp_path / "bad.html"
    bad.write_text(page.read_text().replace(
        "data:image/png;base64,", "data:image/png;base64,AAAA", 1).replace("</body>", "<script>nope();</script></body>"))
    dom, log = render(bad, tmp_path)
    assert 'data-images="broken"' in dom and "Uncaught" in log
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", f"--user-data-dir={tmp_path / 'p2'}",
                    "--window-size=1400,2400", f"--screenshot={tmp_path / 'page.png'}",
                    (sweep_dir / "report" / "report.html").as_uri()], capture_output=True, timeout=120)
    assert (tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG"


READ_ONLY_REPORT = """
import json, sys
from sketchprune.report import build_report
rep = build_report(sys.argv[1])
print(json.dumps({"runs": rep["runs"], "modules": sorted(m for m in sys.modules if m.startswith("sketchprune"))}))
"""


def test_the_report_reads_results_without_the_runner_or_the_training_stack(tmp_path):
    from sketchprune.atomic import write_json
    from sketchprune.results import Result

    runs = [(m, mode, d, s) for m in ("magnitude", "snip") for mode in ("topk", "sample") for d in (0.5, 0.1)
            for s in (0, 1)] + [("random", "topk", 1.0, s) for s in (0, 1)]
    for i, (method, mode, density, seed) in enumerate(runs):
        acc = 0.5 + i / 100  # every run its own accuracy, to find it in the table
        r = Result(config={"model": "mlp", "dataset": "digits", "method": method, "mode": mode, "density": density,
                           "seed": seed}, hash=f"h{i:02d}", compression=1 / density, final_test_acc=acc,
                   best_test_acc=acc, final_train_loss=1.0, kept=round(100 * density), total=100,
                   density_actual=density, collapsed=[], layer_density={"0.weight": density, "2.weight": density / 2},
                   diagnostics={"min_layer_density": density / 2, "connected": True, "log10_paths": 10 * density,
                                "log10_flow": density}, prune_seconds=0.1, wall_seconds=1.0)
        write_json(tmp_path / "runs" / r.hash / "result.json", r.to_dict())
    out = subprocess.run([sys.executable, "-c", READ_ONLY_REPORT, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["runs"] == len(runs) and "sketchprune.results" in got["modules"]
    assert not {"sketchprune.train", "sketchprune.experiment", "sketchprune.sweep"} & set(got["modules"])
    with open(tmp_path / "report" / "results.csv") as f:
        rows = {r["hash"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(runs) and float(rows["h03"]["final_test_acc"]) == 0.53 and rows["h03"]["kept"] == "10"
    summary = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 2 * 2 * 2 + 1  # methods x modes x densities, and the dense model


def test_diagnostic_power_ranks_disconnected_masks_lowest():
    from sketchprune.report import diagnostic_power

    def row(acc, paths, connected, density=0.1, comp=10.0):
        return {"setting": "s", "density": density, "compression": comp, "final_test_acc": acc,
                "min_layer_density": 0.0 if not connected else acc / 10, "log10_paths": paths,
                "log10_flow": paths, "connected": connected}

    rows = [row(0.1, None, False), row(0.5, 3.0, True), row(0.7, 5.0, True), row(0.9, None, True),  # None: overflow
            row(0.3, 1.0, True, comp=100.0), row(0.2, 2.0, True, comp=100.0), row(0.9, 0.0, True, density=1.0)]
    (a, b) = diagnostic_power(rows)  # the dense run (density 1) is left out
    assert (a["compression"], a["runs"], b["runs"]) == (10.0, 4, 2)
    assert a["rho_log10_paths"] == pytest.approx(1.0) and a["rho_min_layer_density"] == pytest.approx(1.0)
    assert b["rho_log10_paths"] == pytest.approx(-1.0)
    assert (a["disconnected_runs"], a["disconnected_acc"]) == (1, 0.1)
    assert a["connected_acc"] == pytest.approx((0.5 + 0.7 + 0.9) / 3) and b["disconnected_acc"] is None


def test_report_tables_equal_results_and_files_are_valid(tmp_path, capsys, write_sweep):
    cfg = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    results = {r.hash: r for r in collect(out)}
    import csv

    with open(rep["files"]["results_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for row in rows:
        assert float(row["final_test_acc"]) == pytest.approx(results[row["hash"]].final_test_acc)
        assert int(row["kept"]) == results[row["hash"]].kept
    for key in ("accuracy_png", "differences_png", "collapse_png"):
        assert Path(rep["files"][key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(rep["files"]["html"]).read_text()
    assert page.count("data:image/png;base64,") == 3 and "http://" not in page and "https://" not in page
    md = Path(rep["files"]["pivot_md"]).read_text()
    assert md.count("### ") == 2 and md.count("| magnitude |") == 2  # a table per mode, a row per method
    assert len(Path(rep["files"]["summary_csv"]).read_text().splitlines()) == 1 + 8  # 2 x 2 modes x 2 densities


def test_report_on_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


# ---- groups: runs that differ are never merged, and the page holds no markup from a result ----------

def _run(hash_: str, method: str = "snip", mode: str = "topk", seed: int = 0, acc: float = 0.5, **settings):
    from sketchprune.results import Result

    config = {"model": "mlp", "dataset": "digits", "method": method, "mode": mode, "density": 0.1, "seed": seed,
              "power": 1.0, "train": {"epochs": 1}, "method_options": {}, **settings}
    return Result(config=config, hash=hash_, compression=10.0, final_test_acc=acc, best_test_acc=acc,
                  final_train_loss=1.0, kept=10, total=100, density_actual=0.1, collapsed=[],
                  layer_density={"0.weight": 0.1}, prune_seconds=0.0, wall_seconds=0.0)


def test_runs_that_differ_in_any_setting_are_separate_groups():
    from sketchprune.report import paired_differences, summarize

    runs = [_run(f"p{p}s{s}", mode="sample", seed=s, power=float(p), acc=0.1 * p + 0.01 * s)
            for p in (1, 8) for s in (0, 1)]
    runs += [_run(f"t{s}", seed=s, acc=0.3 + 0.01 * s) for s in (0, 1)]
    runs += [_run(f"g{t}s{s}", method="grasp", seed=s, acc=0.2, method_options={"grasp_temperature": t})
             for t in (100, 200) for s in (0, 1)]
    runs += [_run(f"e{e}s{s}", method="magnitude", seed=s, acc=0.2, train={"epochs": e}) for e in (1, 3) for s in (0, 1)]
    rows = {(r["method"], r["mode"]): r for r in summarize(runs)}
    assert rows[("snip power=1", "sample")]["mean"] == pytest.approx(0.105)
    assert rows[("snip power=8", "sample")]["mean"] == pytest.approx(0.805)
    assert rows[("snip", "topk")]["seeds"] == 2  # top-k: the partner of every power
    assert {("grasp grasp_temperature=100", "topk"), ("grasp grasp_temperature=200", "topk"),
            ("magnitude train.epochs=1", "topk"), ("magnitude train.epochs=3", "topk")} <= set(rows)
    paired = {(r["method"], r["versus"]): r for r in paired_differences(runs)}
    assert paired[("snip power=8", "sample - topk")]["diff"] == pytest.approx(0.5)
    assert paired[("snip power=1", "sample - topk")]["diff"] == pytest.approx(-0.2)


def test_two_runs_with_the_same_key_are_an_error_not_an_overwrite():
    from sketchprune.report import summarize

    with pytest.raises(SketchpruneError, match="runs a and b have the same setting, method, mode, density and seed"):
        summarize([_run("a", acc=0.1), _run("b", acc=0.9)])


def test_a_method_name_reaches_the_page_escaped(tmp_path):
    from sketchprune.atomic import write_json
    from sketchprune.report import build_report

    evil = "<img src=x onerror=alert(1)>"
    for i, r in enumerate([_run("a", method=evil), _run("b", method=evil, mode="sample"),
                           _run("c", method="snip", density=1.0)]):
        folder = tmp_path / "runs" / r.hash
        write_json(folder / "result.json", r.to_dict())
        write_json(folder / "config.json", {"hash": r.hash, **r.config})
    build_report(tmp_path / "runs", tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text()
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# ---- what the figures and tables show (issue 24) ------------------------------------------------------

def test_compression_is_written_one_way_and_the_axis_is_log_scale_with_those_labels():
    from sketchprune.plotting import plt
    from sketchprune.report import _compression_axis, compression_label, readable

    assert [compression_label(1 / d) for d in (0.316, 0.1, 0.0316, 0.01, 0.001, 1.0)] == [
        "3.16x", "10x", "31.6x", "100x", "1000x", "1x"]
    fig, ax = plt.subplots()
    _compression_axis(ax, [1 / 0.316, 10.0, 1 / 0.0316, 10.0])
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["3.16x", "10x", "31.6x"]
    plt.close(fig)
    assert readable([{"compression": 1 / 0.0316, "connected": True, "lo": 1}], drop=("lo",)) == [
        {"compression": "31.6x", "connected": "yes"}]


def test_paired_rows_say_which_modes_gave_the_same_masks(sweep_dir):
    results = collect(sweep_dir)
    acc = {}
    for r in results:
        c = r.config
        acc.setdefault((c["method"], c["mode"], c["density"]), {})[c["seed"]] = r.final_test_acc
    paired = paired_differences(results)
    assert paired and all("identical" in r for r in paired)
    for r in paired:
        mode = r["versus"].split(" ")[0]
        a, b = acc[(r["method"], mode, r["density"])], acc[(r["method"], "topk", r["density"])]
        assert r["identical"] == all(a[s] == b[s] for s in a)
        if r["identical"]:
            assert r["diff"] == 0 and r["ci"] == 0


def test_accuracy_bands_are_clipped_and_chance_is_known():
    from sketchprune.report import _clip, chance_accuracy

    assert _clip(-0.2, 0.4) == (0.0, 0.4) and _clip(0.7, 1.3) == (0.7, 1.0)
    assert chance_accuracy({"dataset": "mnist1d"}) == 0.1 and chance_accuracy({"dataset": "cifar100"}) == 0.01
    assert chance_accuracy({"dataset": "tokens", "data_options": {"vocab": 8}}) == 0.125
    assert chance_accuracy({"dataset": "my-regression"}) is None


def test_layers_are_named_with_type_and_shape():
    from sketchprune.report import layer_names

    assert layer_names({"1.weight": (32, 1, 5), "8.weight": (10, 160), "a.in_proj_weight": (96, 32),
                        "c.weight": (8, 3, 3, 3)}) == {
        "1.weight": "1.weight: Conv1d 32x1x5", "8.weight": "8.weight: Linear 10x160",
        "a.in_proj_weight": "a.in_proj_weight: attention 96x32", "c.weight": "c.weight: Conv2d 8x3x3x3"}


def test_every_setting_that_differs_is_a_column_and_runs_are_sorted(tmp_path, capsys):
    sweep = tmp_path / "p.yaml"
    sweep.write_text("fixed: {model: mlp, dataset: digits, model_options: {width: 16}, method: magnitude, mode: sample,\n"
                     "        density: 0.2, train: {epochs: 1}}\ngrid: {power: [1, 4], seed: [1, 0]}\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "s")]) == 0
    assert main(["report", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    with open(tmp_path / "s" / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert "power" in rows[0] and {r["power"] for r in rows} == {"1.0", "4.0"}
    assert [(r["method"], r["seed"]) for r in rows] == [("magnitude power=1", "0"), ("magnitude power=1", "1"),
                                                        ("magnitude power=4", "0"), ("magnitude power=4", "1")]
    page = (tmp_path / "s" / "report" / "report.html").read_text()
    runs = page[page.index("<h2>All runs</h2>"):]
    assert "<th>power</th>" in runs and "<th>compression</th>" in runs and ">5x<" in runs
    assert "3.165" not in page and "white-space:nowrap" in page and "overflow-x:auto" in page


def test_a_report_made_again_from_its_results_csv_has_the_same_tables(sweep_dir, tmp_path, capsys):
    """The committed E5 reports keep results.csv, not the run folders: fed that file, the report gives
    the same results.csv (collapsed-layer counts included), summary, paired differences and pivot
    tables (no collapse view: no per-layer fractions)."""
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a" / "results.csv"), "--out", str(tmp_path / "b"), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    for name in ("results.csv", "summary.csv", "paired.csv", "pivot.md", "diagnostics.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text(), name
    with open(tmp_path / "b" / "results.csv") as f:  # the sweep has collapsed runs, and the file keeps them
        assert any(int(r["collapsed_layers"]) > 0 for r in csv.DictReader(f))
    assert "collapse_png" not in files and "accuracy_png" in files
