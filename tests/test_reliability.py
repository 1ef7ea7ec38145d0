"""Issue 13: masks nobody else can switch off, run folders that never mix configs, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sketchprune import Masks, SketchpruneError, data, prune
from sketchprune.cli import main
from sketchprune.pruning import UnprunedWarning
from sketchprune.sweep import _lock, collect, status
from sketchprune.train import TrainConfig, train

TINY_SWEEP = """
fixed: {model: mlp, dataset: digits, model_options: {width: 16},
        train: {epochs: 1, optimizer: adam, lr: 0.003, weight_decay: 0.0}}
grid: {method: [magnitude], mode: [topk, sample]}
"""


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def sgd_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 12)).tanh().sum().backward()
        opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def pruned_are_zero(model, masks) -> bool:
    params = dict(model.named_parameters())
    return all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items())


# ---- defect 1: a run folder belongs to one config ---------------------------------------------------

def test_train_refuses_a_folder_of_another_config_and_resumes_its_own(tmp_path, capsys):
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--json", "--out", str(tmp_path)]
    assert main(base + ["--density", "0.5"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(base + ["--density", "0.2"]) == 2
    err = one_line_error(capsys)
    assert "holds another run" in err and "--out" in err
    assert json.loads((tmp_path / "result.json").read_text())["density_actual"] == first["density_actual"]
    assert main(base + ["--density", "0.5"]) == 0  # the same config: its finished result
    assert json.loads(capsys.readouterr().out)["hash"] == first["hash"]


def test_a_killed_run_is_not_finished_with_other_settings(tmp_path, capsys):
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path)]
    assert main(base + ["--density", "0.5"]) == 0
    capsys.readouterr()
    (tmp_path / "result.json").unlink()  # as if killed after pruning: masks and checkpoint stay
    assert main(base + ["--density", "0.2", "--method", "random"]) == 2
    assert "holds another run" in one_line_error(capsys)


def test_train_without_out_gets_one_folder_per_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--json"]
    assert main(base + ["--density", "0.5"]) == 0 and main(base + ["--density", "0.2"]) == 0
    runs = sorted((tmp_path / "runs" / "train").iterdir())
    densities = sorted(json.loads((r / "result.json").read_text())["density_actual"] for r in runs)
    assert densities == [pytest.approx(0.2, abs=1e-3), pytest.approx(0.5, abs=1e-3)]


# ---- defect 2: each handle owns what it added -------------------------------------------------------

def test_applying_the_same_masks_twice_then_removing_one_keeps_them():
    model = net()
    m = prune(model, "magnitude", 0.3)
    h1, h2 = m.apply(model), m.apply(model)
    p = model[0].weight
    assert len(p._post_accumulate_grad_hooks) == 1  # hooks never pile up
    h1.remove()
    sgd_steps(model)
    assert pruned_are_zero(model, m)
    h1.remove()  # removing twice takes nothing more back
    sgd_steps(model)
    assert pruned_are_zero(model, m)
    h2.remove()
    sgd_steps(model)
    assert not pruned_are_zero(model, m) and not p._post_accumulate_grad_hooks


def test_two_masks_enforce_their_intersection_until_one_is_removed():
    model = net()
    a = prune(model, "magnitude", 0.5)
    b = prune(model, "random", 0.5, seed=3)
    ha, hb = a.apply(model), b.apply(model)
    sgd_steps(model)
    assert pruned_are_zero(model, a) and pruned_are_zero(model, b)
    ha.remove()
    sgd_steps(model)
    assert pruned_are_zero(model, b)  # B is still enforced
    hb.remove()


def test_train_does_not_remove_the_callers_masks(digits_small):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    m = prune(model, "magnitude", 0.2)
    m.apply(model)
    train(model, digits_small, TrainConfig(epochs=1, lr=0.05), masks=m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(digits_small.train_x[:32]).sum().backward()
        opt.step()
    assert pruned_are_zero(model, m)


@pytest.fixture(scope="module")
def digits_small():
    return data.load("digits")


# ---- defect 3: a shared parameter is one prunable entry ---------------------------------------------

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 16, bias=False)
        self.b = nn.Linear(16, 16, bias=False)
        self.b.weight = self.a.weight
        self.c = nn.Linear(16, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_a_shared_weight_is_pruned_once():
    torch.manual_seed(0)
    model = Tied()
    m = prune(model, "magnitude", 0.5)
    assert list(m) == ["a.weight", "c.weight"] and sum(t for _, t in m.counts().values()) == 320
    h = m.apply(model)  # the masks fit the model
    h.remove()
    s = prune(model, "synflow", 0.2, iterations=4, input_shape=(16,))
    assert sum(k for k, _ in s.counts().values()) == round(0.2 * 320)


def test_a_tied_embedding_and_head_is_one_tensor_under_its_first_name():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.head = nn.Linear(6, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(self.emb(x))

    m = prune(LM(), "magnitude", 0.5)
    assert m.counts() == {"emb.weight": (30, 60)}


def test_unknown_layers_are_named_and_can_be_included_or_excluded():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.raw = nn.Parameter(torch.randn(8, 8))
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            a, _ = self.attn(x, x, x)
            return self.fc(a @ self.raw)

    model = Odd()
    with pytest.warns(UnprunedWarning) as record:
        m = prune(model, "magnitude", 0.5)
    message = str(record[0].message)
    assert "attn.in_proj_weight (MultiheadAttention)" in message and "raw (Odd)" in message and "include=" in message
    assert "attn.in_proj_weight" not in m
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnprunedWarning)
        m = prune(model, "magnitude", 0.5, include=("attn.in_proj_weight", "raw"))
        assert {"attn.in_proj_weight", "raw", "fc.weight"} <= set(m)
        prune(model, "magnitude", 0.5, exclude=("attn.in_proj_weight", "raw"))


def test_a_lazy_layer_is_a_one_line_error_naming_it():
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(SketchpruneError, match=r"0.weight.*not initialized.*exclude="):
        prune(model, "magnitude", 0.5)


# ---- defect 4: one-line errors, damaged files ---------------------------------------------------------

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
def test_theory_data_files_that_are_wrong_give_one_line(case, tmp_path, capsys):
    path = _bad_files(tmp_path)[case]
    rc = main(["theory", "linear", "--data", str(path), "--target", "y", "--draws", "2", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = one_line_error(capsys)
    assert str(path.name) in err


@pytest.mark.parametrize("args", [["theory", "sketch", "--n", "0"], ["theory", "linear", "--n", "0"],
                                  ["theory", "ntk", "--trials", "0"], ["theory", "deep-linear", "--width", "0"],
                                  ["theory", "data", "--draws", "1"]])
def test_theory_sizes_out_of_range_give_one_line(args, tmp_path, capsys):
    assert main(args + ["--out", str(tmp_path)]) == 2
    one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_a_truncated_mnist1d_cache_is_generated_again(tmp_path):
    first = data.load("mnist1d", root=tmp_path)
    cache = tmp_path / "mnist1d.npz"
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="damaged; generating it again"):
        again = data.load("mnist1d", root=tmp_path)
    assert torch.equal(first.train_x, again.train_x)
    assert np.load(cache)["x"].shape[0] == len(first.train_y)  # the cache is whole again


def test_a_damaged_result_counts_as_failed_and_retry_reruns_it(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    victim = sorted(out.rglob("result.json"))[0]
    victim.write_text('{"config": ')  # corrupted by hand
    assert status(victim.parent) == "failed"
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        assert len(collect(out)) == 1
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0  # no crash: the damaged run is left out
    assert json.loads(capsys.readouterr().out)["runs"] == 1
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed_earlier"] == 1
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1 and status(victim.parent) == "done"


def test_a_truncated_checkpoint_fails_once_and_retry_starts_over(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("epochs: 1", "epochs: 2"))
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 0
    run_dir = sorted(out.rglob("result.json"))[0].parent
    (run_dir / "result.json").unlink()
    ckpt = run_dir / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    assert main(["sweep", str(cfg), "--out", str(out), "--json"]) == 1  # the run failed: non-zero exit
    err = json.loads((run_dir / "error.json").read_text())["error"]
    assert "cannot be read" in err
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", str(out), "--json", "--retry-failed"]) == 0
    assert status(run_dir) == "done"
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


# ---- defect 5: inverted sampling favours low scores ---------------------------------------------------

@pytest.mark.parametrize("method", ["magnitude", "snip"])
def test_inverted_sampling_keeps_low_scores(method):
    from sketchprune.pruning import score

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 200), nn.ReLU(), nn.Linear(200, 10))
    batch = [(torch.randn(64, 100), torch.randint(0, 10, (64,)))]
    kw = {"data": batch} if method == "snip" else {}
    s = torch.cat([t.reshape(-1) for t in score(model, method, **kw).values()])

    def flat(m):
        return torch.cat([t.reshape(-1) for t in m.values()])

    normal = flat(prune(model, method, 0.1, mode="sample", seed=0, **kw))
    inverted = flat(prune(model, method, 0.1, mode="sample", seed=0, invert=True, **kw))
    rand = flat(prune(model, "random", 0.1, seed=0))
    assert float(s[inverted].mean()) < float(s[rand].mean()) < float(s[normal].mean())

    def overlap(a, b):
        return int((a & b).sum()) / int(a.sum())

    assert overlap(inverted, normal) < overlap(rand, normal)


# ---- papercuts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [["--method", "bogus"], ["--model", "vgg7"], ["--dataset", "imagenet"],
                                 ["--augment"], ["--compression", "inf"], ["--methd", "snip"]])
def test_train_checks_settings_before_any_work(bad, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--out", str(out)] + bad) == 2
    one_line_error(capsys)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_on_a_cpu_machine_fails_before_pruning(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--model", "mlp", "--dataset", "digits", "--out", str(out)]) == 2
    assert "no GPU" in one_line_error(capsys) and not out.exists()


def test_run_with_a_bad_method_trains_nothing(tmp_path, capsys):
    assert main(["run", "--methods", "magnitude,bogus", "--out", str(tmp_path / "r")]) == 2
    assert "bogus" in one_line_error(capsys) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, msg", [
    (["--methods", "magnitude,"], "empty item"),
    (["--seeds", "0,0"], "twice"),
    (["--epochs", "1", "--epochs", "2"], "given twice"),
])
def test_list_and_repeated_flags(args, msg, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r")] + args) == 2
    assert msg in one_line_error(capsys) and not (tmp_path / "r").exists()


def test_a_list_with_spaces_is_read_as_meant(tmp_path, capsys):
    rc = main(["run", "--methods", "magnitude, random", "--densities", "0.5", "--seeds", "0", "--epochs", "1",
               "--dataset", "digits", "--model", "mlp", "--json", "--out", str(tmp_path)])
    assert rc == 0 and json.loads(capsys.readouterr().out)["done"] == 2 * 3 + 1  # 2 methods x 3 modes, dense


@pytest.mark.parametrize("text, msg", [
    ("", "is empty"),
    ("fixed: {model: mlp}\ngrid: {density: [true]}\n", "must be float"),
    ("fixed: {model: [mlp]}\n", "goes under grid"),
    ("grid: {seed: [0, 1, 0]}\n", "twice"),
    ("grid: {method: [magnitude, bogus]}\n", "unknown method"),
])
def test_sweep_files_are_checked_whole_before_any_run(text, msg, tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(cfg), "--out", str(out)] + extra) == 2
        assert msg in one_line_error(capsys)
    assert not out.exists()


def test_a_sweep_whose_runs_fail_exits_non_zero(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("dataset: digits", "dataset: cifar10"))  # no CIFAR files here
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 1


def test_one_sweep_per_folder(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    with _lock(out):  # as if another sweep were running there
        assert main(["sweep", str(cfg), "--out", str(out)]) == 2
        assert "another sweep" in one_line_error(capsys)
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0


def test_workers_end_when_the_sweep_is_killed(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(TINY_SWEEP.replace("epochs: 1", "epochs: 100000").replace("mode: [topk, sample]",
                                                                          "mode: [topk, sample], seed: [0, 1, 2]"))
    proc = subprocess.Popen([sys.executable, "-m", "sketchprune.cli", "sweep", str(cfg), "--out", str(tmp_path / "o"),
                             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err.txt", "w"))

    def workers() -> list[int]:
        out = subprocess.run(["ps", "-ww", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout
        return [int(line.split()[0]) for line in out.splitlines()
                if int(line.split()[1]) == proc.pid and "spawn_main" in line]

    try:
        deadline = time.time() + 90
        while len(workers()) < 2 and time.time() < deadline:
            time.sleep(0.2)
        pids = workers()
        assert len(pids) == 2, "the workers did not start: " + (tmp_path / "err.txt").read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    for p in alive:  # leave nothing running, whatever the outcome
        os.kill(p, signal.SIGKILL)
    assert not alive, f"orphaned workers {alive}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_train_warns_about_layer_collapse(tmp_path, capsys):
    rc = main(["train", "--model", "conv1d", "--method", "magnitude", "--density", "0.1", "--epochs", "1",
               "--model-options", "width=64", "--out", str(tmp_path), "--json"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: layer collapse" in err and json.loads((tmp_path / "result.json").read_text())["collapsed"]


def test_help_shows_no_bool_metavar(capsys):
    for cmd in (["--help"], ["train", "--help"], ["sweep", "--help"]):
        main(cmd)
        assert "<bool>" not in capsys.readouterr().out


def test_mask_files_errors_and_modes(tmp_path):
    m = prune(net(), "magnitude", 0.5)
    path = m.save(tmp_path / "masks.safetensors")
    (tmp_path / "other.json").write_text("{}")
    assert path.stat().st_mode & 0o777 == (tmp_path / "other.json").stat().st_mode & 0o777
    path.write_bytes(b"\x00" * 30)
    with pytest.raises(SketchpruneError, match="corrupt"):
        Masks.load_metadata(path)
    with pytest.raises(SketchpruneError, match="does not exist"):
        Masks.load_metadata(tmp_path / "missing.safetensors")


def test_iid_masks_are_drawn_on_the_successive_sampling_path():
    """Drawing with replacement until k distinct has the law of successive sampling (that law is
    tested in test_select.py), so iid masks are computed on the exact path, draw for draw: this pins
    that implementation choice (iterative SynFlow with iid used to draw ever more as k neared n)."""
    model = net()
    a = prune(model, "synflow", 0.05, iterations=10, mode="sample", scheme="iid")
    b = prune(model, "synflow", 0.05, iterations=10, mode="sample", scheme="exact")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_missing_data_files_name_flags_that_prune_has(tmp_path, capsys):
    assert main(["prune", "--dataset", "cifar10", "--model", "resnet20", "--out", str(tmp_path)]) == 2
    err = one_line_error(capsys)
    assert "--data-root" in err and "--download" in err
    main(["prune", "--help"])
    helptext = capsys.readouterr().out
    assert "--data-root" in helptext and "--download" in helptext
