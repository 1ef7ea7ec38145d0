"""Every example of the README runs as written, offline: each Python snippet on its own (it defines
what it uses), and each command line (the bash blocks and the command table, every bracketed
option too), in a fresh folder that holds only what the README points at (configs/, examples/).

Where a line stands for the reader's own value it gets one: ``F.csv`` is a CSV with a column
``COL``, ``HASH`` a run of the folder reported. Three lines are run smaller than written, and say
so in ``SHRUNK``: the E5 sweep (hours) as its own ``--dry-run``, and ``planted`` on one seed and one
density (its full grid takes minutes). ``--ray-address auto`` needs a running Ray cluster, and
``make test`` is this suite; ``make run`` is ``sketchprune run``, which is run.
"""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sketchprune.methods import registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH = [line.split(" #")[0].strip() for b in re.findall(r"```bash\n(.*?)```", README, re.S)
        for line in b.splitlines() if line.strip() and not line.strip().startswith("#")]
TABLE = [c.replace("\\|", "|") for c in re.findall(r"^\| `(sketchprune [^`]*)`", README, re.M)]

SHRUNK = {
    "sketchprune sweep configs/e5_mnist1d.yaml": ("--dry-run", "its grid is 1,000+ runs (hours): listed, not run"),
    "sketchprune planted --task circle": ("--seeds 0 --densities 0.1", "its full grid takes minutes"),
}
NOT_RUN = {"make test": "this test suite itself", "make run": "`sketchprune run` (the Makefile says so), run below",
           "--ray-address auto": "needs a running Ray cluster"}
PLACEHOLDERS = {"K": "4"}
"""A value a line leaves to the reader (``--stack K``), as the test gives it."""


def block(marker: str) -> str:
    (found,) = [b for b in BLOCKS if marker in b]
    return found


def variants(line: str) -> list[str]:
    """The line without its bracketed options, then with each option (each alternative of ``a|b``)."""
    base = " ".join(re.sub(r"\[[^\]]*\]", " ", line).split())
    out = [base]
    for group in re.findall(r"\[([^\]]*)\]", line):
        group = group.replace("...", "").strip()
        if group in NOT_RUN:
            continue
        tokens = group.split()
        alternatives = [i for i, t in enumerate(tokens) if "|" in t]
        if not alternatives:
            out.append(f"{base} {group}")
            continue
        i = alternatives[0]
        out += [" ".join([base, *tokens[:i], PLACEHOLDERS.get(alt, alt), *tokens[i + 1:]])
                for alt in tokens[i].split("|")]
    return out


def shrunk(line: str) -> str:
    """``line`` as the test runs it (see ``SHRUNK``): the listed flags' values replaced, or the flag added."""
    for start, (flags, _) in SHRUNK.items():
        if not line.startswith(start):
            continue
        args, given = shlex.split(line), flags.split()
        if given == ["--dry-run"]:
            return shlex.join(args if "--dry-run" in args else [*args, "--dry-run"])
        for flag, value in zip(given[::2], given[1::2]):
            args[args.index(flag) + 1] = value
        return shlex.join(args)
    return line


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A folder holding only what the README points at, as the current directory."""
    for name in ("configs", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_line(line: str, capsys) -> str:
    """Run one ``sketchprune ...`` line in this process; it must succeed without a traceback."""
    from sketchprune.cli import main

    rc = main(shlex.split(line)[1:])
    out, err = capsys.readouterr()
    assert rc == 0, f"{line}\n{err[-2000:]}"
    assert "Traceback" not in err and "error:" not in err, err[-2000:]
    return out


# ---- what is run ------------------------------------------------------------------------------------

DEFAULT_JOB_LINES = ["sketchprune run", "sketchprune report runs/e5_mnist1d",
                     "sketchprune report runs/e5_mnist1d --run HASH"]
TABLE_LINES = [v for line in TABLE for v in variants(line) if v not in DEFAULT_JOB_LINES]
(PLUGIN,) = [[line for line in b.splitlines() if line.strip()] for b in re.findall(r"```bash\n(.*?)```", README, re.S)
             if "pip install examples/plugin" in b]
PLUGIN = [line.split(" #")[0].strip() for line in PLUGIN]
(ATTENTION,) = [line for line in BASH if "--model gpt" in line]


def test_every_command_line_is_run_or_says_why_not():
    assert set(BASH) == set(NOT_RUN) & set(BASH) | set(PLUGIN) | {ATTENTION}  # each bash line has its test
    assert {"make run", "make test"} <= set(BASH)
    makefile = (ROOT / "Makefile").read_text()
    assert "run: $(STAMP)\n\t$(VENV)/bin/sketchprune run\n" in makefile and "-m pytest" in makefile
    assert set(DEFAULT_JOB_LINES) <= {v for line in TABLE for v in variants(line)}
    assert len(TABLE) >= 15 and len(TABLE_LINES) + len(DEFAULT_JOB_LINES) >= 24  # every row, every option


@pytest.mark.slow
@pytest.mark.parametrize("line", TABLE_LINES)
def test_command_table_line_runs_as_written(line, fresh, capsys):
    if line.startswith("sketchprune theory linear --data"):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(200, 4, generator=g)
        rows = ["a,b,c,d,COL"] + [",".join(f"{v:.4f}" for v in (*r, float(r @ torch.ones(4)))) for r in x]
        (fresh / "F.csv").write_text("\n".join(rows) + "\n")
    out = run_line(shrunk(line), capsys)
    if line.startswith("sketchprune prune") and "--structure" not in line:
        assert (fresh / "runs/prune/masks.safetensors").is_file() and "total" in out
    if line.startswith("sketchprune train"):
        (result,) = (fresh / "runs/train").glob("*/result.json")
        assert 0 <= json.loads(result.read_text())["final_test_acc"] <= 1


@pytest.mark.slow
def test_the_default_job_and_its_report_run_as_written(fresh, capsys):
    """``sketchprune run`` (``make run``), then the report lines on a sweep folder (the default job's,
    at the path the README names)."""
    run_line("sketchprune run", capsys)
    assert (fresh / "runs/default/report/report.html").is_file()
    (fresh / "runs/e5_mnist1d").symlink_to(fresh / "runs/default")
    run_line("sketchprune report runs/e5_mnist1d", capsys)
    pruned = [f for f in sorted((fresh / "runs/default/runs").iterdir())
              if json.loads((f / "config.json").read_text()).get("density", 1) < 1]
    run_line(f"sketchprune report runs/e5_mnist1d --run {pruned[-1].name}", capsys)  # the collapse view of that run
    assert (fresh / "runs/e5_mnist1d/report/collapse.png").is_file()


@pytest.mark.slow
def test_the_attention_and_plugin_blocks_run_as_written(fresh, capsys, tmp_path_factory):
    run_line(ATTENTION, capsys)
    (result,) = (fresh / "runs/train").glob("*/result.json")
    assert json.loads(result.read_text())["final_test_acc"] > 2 / 16  # above chance
    # the plugin block, in a subprocess that sees the plugin installed into a folder of its own
    lines = PLUGIN
    assert lines[0] == "pip install examples/plugin"  # installed as written, into a folder of its own
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build") / "plugin"
    import shutil

    shutil.copytree(ROOT / "examples" / "plugin", build)  # built outside the repository
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
           "--no-build-isolation", "--target", str(target), str(build)]
    r = subprocess.run(pip, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    for line in lines[1:]:
        r = subprocess.run([sys.executable, "-m", "sketchprune.cli", *shlex.split(line)[1:]], capture_output=True,
                           text=True, env=env, cwd=fresh)
        assert r.returncode == 0, r.stderr[-2000:]
        if line == "sketchprune methods":
            assert "noisy_magnitude" in r.stdout


# ---- the Python snippets, each on its own ---------------------------------------------------------------

def run_block(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope


def test_every_python_snippet_is_tested():
    markers = ["from sketchprune import select, Masks, sketch", '@register("gradnorm"', 'prune(net, "synflow", 0.01',
               'data.load("tokens")', "from sketchprune import models, prune, prune_units"]
    assert sorted(BLOCKS.index(block(m)) for m in markers) == list(range(len(BLOCKS)))


def test_api_tour_runs(fresh):
    scope = run_block(block("from sketchprune import select, Masks, sketch"))
    masks = scope["masks"]
    assert sum(k for k, _ in masks.counts().values()) == round(0.05 * (300 * 784 + 10 * 300))  # exact-k count
    assert bool((scope["model"][0].weight[~scope["masks"]["0.weight"]] == 0).all())
    assert (fresh / "masks.safetensors").is_file()


def test_pruning_tour_runs(fresh):
    scope = run_block(block('prune(net, "synflow", 0.01'))
    assert abs(scope["masks"].density() - 0.01) < 1e-3 and scope["masks"].meta["auto"]  # the last line: auto


def test_attention_tour_runs(fresh):
    scope = run_block(block('data.load("tokens")'))
    masks, encoder = scope["masks"], scope["encoder"]
    assert any(n.endswith("in_proj_weight") for n in masks)
    total = sum(t for _, t in masks.counts().values())
    assert sum(k for k, _ in masks.counts().values()) == round(0.1 * total)
    assert set(masks) == {n for n, p in encoder.named_parameters() if n.endswith("weight") and p.dim() == 2}


def test_adding_a_method_as_shown_works():
    before = dict(registry._METHODS)
    try:
        run_block(block('@register("gradnorm"'))
        from sketchprune import prune

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        data = [(torch.randn(10, 6), torch.randint(0, 3, (10,)))]
        a = prune(net, "gradnorm", 0.5, data=data, mode="sample", gradnorm_power=2.0)
        b = prune(net, "gradnorm", 0.5, data=data, mode="sample", power=2.0)  # |g|^2 at power 1 = |g| at power 2
        c = prune(net, "gradnorm", 0.5, data=data, mode="sample")
        assert a.density() == round(0.5 * 72) / 72 and all(torch.equal(a[n], b[n]) for n in a)
        assert not all(torch.equal(a[n], c[n]) for n in a)  # so the option reached the scorer
    finally:
        registry._METHODS.clear()
        registry._METHODS.update(before)


def test_structured_tour_runs(fresh):
    scope = run_block(block("from sketchprune import models, prune, prune_units"))
    assert scope["small"](scope["x"]).shape == (64, 10)
    import copy

    masked = copy.deepcopy(scope["mlp"])
    scope["masks"].apply(masked).remove()
    assert torch.allclose(scope["fast"](scope["batch"]), masked(scope["batch"]), atol=1e-5)
    assert scope["nm"].meta["nm"] == "2:4"
