"""The command line: version, JSON output equal to the printed table, one-line errors."""

import json
import subprocess
import sys

from sketchprune.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sketchprune.cli", *args], capture_output=True, text=True)


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("sketchprune ")
    r = run_cli("--help")
    for cmd in ("run", "theory"):
        assert cmd in r.stdout


def test_theory_sketch_json_matches_files(tmp_path, capsys):
    rc = main(["theory", "sketch", "--json", "--out", str(tmp_path), "--trials", "40", "--budgets", "5,20",
               "--n", "50", "--cases", "heavy"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "sketch.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "sketch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["budget"] for r in result["rows"]} == {5, 20}
    for r in result["rows"]:
        if r["exact"] is not None:
            assert r["within_ci"] == (abs(r["mc_mean"] - r["exact"]) <= r["ci99"])
            assert abs(r["mc_mean"] - r["exact"]) <= 4 / 2.576 * r["ci99"]  # 4 standard errors


def test_bad_flag_value_is_one_line_error():
    r = run_cli("theory", "sketch", "--budgets", "10,x")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "budgets" in r.stderr


def test_the_library_imports_no_cli_framework():
    """typer and click load with the CLI only: every library module imports without them."""
    code = ("import importlib, pkgutil, sys\n"
            "import sketchprune\n"
            "from sketchprune import prune, select\n"
            "for name in ('pruning', 'methods', 'experiment', 'config'):\n"
            "    importlib.import_module('sketchprune.' + name)\n"
            "for info in pkgutil.walk_packages(sketchprune.__path__, 'sketchprune.'):\n"
            "    if not info.name.startswith(('sketchprune.cli', 'sketchprune.__main__')):\n"
            "        importlib.import_module(info.name)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click'))\n"
            "assert not loaded, loaded\n"
            "import sketchprune.cli\n"
            "assert 'typer' in sys.modules  # the check can see it (this typer vendors click as typer._click)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
