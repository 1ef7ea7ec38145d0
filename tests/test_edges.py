"""Edge cases of the public API found by a hostile run (issue 23): what is refused in one line and
what now works, each checked by its result."""

import copy

import pytest
import torch
from torch import nn

from sketchprune import Masks, SketchpruneError, prune


def _masked_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, prune(model, "magnitude", 0.3)


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 6, generator=g)).sum().backward()
        opt.step()


def test_a_deep_copy_of_a_masked_model_keeps_its_pruned_weights_exactly_zero():
    model, masks = _masked_mlp()
    handle = masks.apply(model)
    twin = copy.deepcopy(model)
    handle.remove()  # the original's handle does not reach the copy
    _train_steps(twin)
    _train_steps(model)
    for name, p in twin.named_parameters():
        if name in masks:
            assert torch.all(p[~masks[name]] == 0) and torch.all(p[masks[name]] != 0)
    assert any(bool((p[~masks[n]] != 0).any()) for n, p in model.named_parameters() if n in masks)  # unmasked now
    assert not hasattr(model[0], "_sketchprune_keep_masks")  # remove() leaves nothing on the model
    again = copy.deepcopy(model)  # a copy of an unmasked model is unmasked
    _train_steps(again)
    assert any(bool((p[~masks[n]] != 0).any()) for n, p in again.named_parameters() if n in masks)


def test_pickling_a_masked_model_carries_no_masks(tmp_path):
    import pickle

    model, masks = _masked_mlp()
    masks.apply(model)
    back = pickle.loads(pickle.dumps(model[0].__dict__["_sketchprune_keep_masks"]))
    assert back.params == []


# ---- model shapes the method wrapper names (T12) -----------------------------------------------------------

X, Y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
FORWARD_METHODS = ["snip", "grasp", "synflow", "sketch", "px", "ntk", "ntk_sap", "prospr", "force"]


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def logits(self, x):
        return self.b(torch.relu(self.a(x)))


class ReturnsTuple(_Pair):
    def forward(self, x):
        out = self.logits(x)
        return out, out.sum()


class ReturnsDict(_Pair):
    def forward(self, x):
        return {"logits": self.logits(x)}


class NeedsKeyword(_Pair):
    def forward(self, x, *, scale):
        return self.logits(x) * scale


@pytest.mark.parametrize("method", FORWARD_METHODS)
@pytest.mark.parametrize("model, says", [(ReturnsTuple, "returns a tuple, not a tensor"),
                                         (ReturnsDict, "returns a dict, not a tensor"),
                                         (NeedsKeyword, "needs more than the input (scale)")])
def test_a_model_the_methods_cannot_call_is_named_in_one_line(method, model, says):
    with pytest.raises(SketchpruneError) as e:
        prune(model(), method, 0.5, data=[(X, Y)], input_shape=(6,))
    assert says in str(e.value) and "wrap the model" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("model", [ReturnsTuple, ReturnsDict, NeedsKeyword])
def test_methods_that_do_not_run_the_model_still_prune_it(model):
    net = model()
    masks = prune(net, "magnitude", 0.5)
    assert masks.counts() == {"a.weight": masks.counts()["a.weight"], "b.weight": masks.counts()["b.weight"]}
    assert sum(k for k, _ in masks.counts().values()) == 36  # half of 48 + 24
    expected = torch.cat([net.a.weight.abs().flatten(), net.b.weight.abs().flatten()]).topk(36).values.min()
    assert all(bool((getattr(net, n[0]).weight.abs()[m] >= expected).all()) for n, m in masks.items())


@pytest.mark.parametrize("method", ["snip", "grasp", "px"])
def test_batchnorm_in_train_mode_on_one_sample_is_named(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(SketchpruneError, match="BatchNorm layer in training mode got a batch of one sample"):
        prune(net, method, 0.5, data=[(X[:1], Y[:1])], train_mode=True)
    masks = prune(net, method, 0.5, data=[(X[:2], Y[:2])], train_mode=True)  # two samples are enough
    assert sum(k for k, _ in masks.counts().values()) == 36


@pytest.mark.parametrize("method", ["magnitude", "random", "snip", "synflow"])
def test_weights_on_the_meta_device_are_refused(method):
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(SketchpruneError, match="meta device.*to_empty"):
        prune(net, method, 0.5, data=[(X, Y)])


def test_px_with_an_empty_batch_is_refused():
    torch.manual_seed(0)
    with pytest.raises(SketchpruneError, match="empty"):
        prune(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), "px", 0.5, data=[(X[:0], Y[:0])])


def test_a_bug_in_a_method_is_not_dressed_as_bad_input(scratch_registry):
    from sketchprune.methods import registry

    @registry.register("buggy_for_test", description="raises a TypeError of its own")
    def buggy(ctx):
        return None + 1

    with pytest.raises(TypeError, match="unsupported operand"):
        prune(nn.Sequential(nn.Linear(6, 3)), "buggy_for_test", 0.5)


def test_sparse_on_float16_keeps_dense_what_has_no_csr_product():
    from sketchprune.export import SparseLinear, sparse

    net, masks = _masked_mlp()
    half = copy.deepcopy(net).half()
    x = torch.randn(4, 6).half()
    fast = sparse(half, masks, example=x)
    assert not any(isinstance(m, SparseLinear) for m in fast.modules()) or x.is_cuda
    masked = copy.deepcopy(half)
    masks.apply(masked).remove()
    assert torch.equal(fast(x), masked(x)) and fast(x).dtype == torch.float16
    if not torch.cuda.is_available():
        with pytest.raises(SketchpruneError, match="has no CSR sparse product here"):
            sparse(half, masks, measure=False)
    assert isinstance(sparse(net, masks, measure=False)[0], SparseLinear)  # float32 still goes sparse


def test_project_nm_on_another_model_is_refused():
    from sketchprune.nm import project_nm

    net, masks = _masked_mlp()
    torch.manual_seed(1)
    with pytest.raises(SketchpruneError, match="has shape .* but the parameter has"):
        project_nm(masks, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 2, 4)
    with pytest.raises(SketchpruneError, match="names no parameter of this model"):
        project_nm(masks, nn.Sequential(nn.Identity(), nn.Linear(6, 8)), 2, 4)
    projected = project_nm(masks, net, 1, 2)
    assert all(int(m.reshape(m.shape[0], -1, 2).sum(-1).max()) <= 1 for m in projected.values())


def test_prune_units_on_a_model_with_an_embedding_is_refused():
    from sketchprune import prune_units

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.hidden, self.out = nn.Embedding(20, 8), nn.Linear(8, 16), nn.Linear(16, 3)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(self.emb(x)))).mean(1)

    tokens = torch.randint(0, 20, (4, 5))
    for method in ("sketch", "l1", "random", "synflow"):
        with pytest.raises(SketchpruneError, match="Embedding .*prune its weights with prune"):
            prune_units(Tokens(), method, 0.5, data=[(tokens, torch.zeros(4, dtype=torch.long))])


def test_prune_units_on_inputs_that_do_not_fit_is_one_line():
    from sketchprune import prune_units

    with pytest.raises(SketchpruneError, match=r"could not run the model on inputs of shape \(5,\)"):
        prune_units(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), "l1", 0.5, input_shape=(5,))


# ---- sweeps, run and report (T7, T10, papercuts) -----------------------------------------------------------

import json  # noqa: E402

import yaml  # noqa: E402

from sketchprune.cli import main  # noqa: E402

FIXED = {"model": "mlp", "dataset": "digits", "model_options": {"width": 8}, "train.epochs": 1}


def _sweep_file(folder, **spec):
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump({"fixed": FIXED, **spec}))
    return path


def _only_run_folder(out):
    (d,) = (out / "runs").iterdir()
    return d


def test_retry_failed_on_a_linked_run_folder_removes_the_link_not_its_target(tmp_path, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5]}), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    d = _only_run_folder(out)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "error.json").write_text('{"error": "x"}')
    (target / "keep.txt").write_text("precious")
    import shutil

    shutil.rmtree(d)
    d.symlink_to(target, target_is_directory=True)
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 1  # failed earlier: not done
    assert main(["sweep", str(path), "--out", str(out), "--retry-failed", "--json"]) == 0
    assert not d.is_symlink() and (d / "result.json").is_file()
    assert sorted(p.name for p in target.iterdir()) == ["error.json", "keep.txt"]  # the link's target untouched


def test_retry_failed_never_deletes_through_a_linked_parent_outside_the_sweep(tmp_path, cli_error, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5]}), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    outside = tmp_path / "outside"
    (out / "runs").rename(outside)
    (out / "runs").symlink_to(outside, target_is_directory=True)
    (run,) = outside.iterdir()
    (run / "result.json").write_text("damaged")
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--retry-failed"]) == 2
    assert "does not follow links out of the sweep folder" in cli_error()
    assert (run / "result.json").read_text() == "damaged" and (run / "masks.safetensors").is_file()


def test_a_second_sweep_exits_1_while_failed_runs_remain(tmp_path, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5, 0.2]}), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    d = sorted((out / "runs").iterdir())[0]
    (d / "result.json").write_text("{}")
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "error: 1 run(s) failed" in err and "--retry-failed" in err
    assert main(["sweep", str(path), "--out", str(out), "--retry-failed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1


def test_an_empty_grids_list_is_an_error(tmp_path, cli_error):
    path = _sweep_file(tmp_path, grids=[])
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "grids is an empty list" in cli_error() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec, says", [
    ({"grid": {"density": [0.5, 1e-6]}}, "keeps fewer than one of the model's 656 prunable weights"),
    ({"grids": [{"density": [0.5]}, {"model": ["resnet20"], "dataset": ["synthetic"]}]},
     "model 'resnet20' does not fit data set 'synthetic'"),
])
def test_a_run_that_cannot_work_is_found_before_any_run_starts(spec, says, tmp_path, cli_error):
    path, out = _sweep_file(tmp_path, **spec), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = cli_error()
    assert says in err and "run " in err and not out.exists()  # nothing trained, nothing written


def test_a_killed_sweeps_temporary_files_are_cleaned_on_the_next_start(tmp_path, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5]}), tmp_path / "out"
    out.mkdir()
    stale = [out / ".sweep.0123abcd.json.tmp", out / ".report.89abcdef.html.tmp"]
    for p in stale:
        p.write_text("")
    mine = out / "notes.tmp"  # not a temporary file of ours: left alone
    mine.write_text("mine")
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    assert not any(p.exists() for p in stale) and mine.read_text() == "mine"


def test_run_with_a_method_that_builds_its_mask_runs_it_top_k_only(tmp_path, capsys):
    rc = main(["run", "--methods", "phew,magnitude", "--densities", "0.5", "--seeds", "0", "--epochs", "1",
               "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["done"] == 1 + 3 + 1  # phew top-k, magnitude's 3 modes, dense
    modes = sorted((json.loads(p.read_text())["config"]["method"], json.loads(p.read_text())["config"]["mode"])
                   for p in tmp_path.rglob("result.json"))
    assert ("phew", "topk") in modes and not any(m == "phew" and mode != "topk" for m, mode in modes)


def test_a_dense_only_run_trains_once_per_seed_and_reports(tmp_path, capsys):
    rc = main(["run", "--methods", "magnitude,snip", "--densities", "1", "--seeds", "0,1", "--epochs", "1",
               "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path), "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    assert got["done"] == 2 and [r["method"] for r in got["rows"]] == ["dense"] and got["rows"][0]["seeds"] == 2
    assert not (tmp_path / "report" / "accuracy.png").exists()
    assert "Only dense runs here" in (tmp_path / "report" / "report.html").read_text()


def test_report_of_an_unknown_run_writes_nothing(tmp_path, cli_error, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5]}), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--run", "BOGUS"]) == 2
    assert "no run with hash 'BOGUS'" in cli_error() and not (out / "report").exists()


@pytest.mark.parametrize("damage", [lambda c: c.pop("mode"), lambda c: c.pop("model"),
                                    lambda c: c.update(density="0.5"), lambda c: c.update(seed=None),
                                    lambda c: c.update(model_options=[1]), lambda c: c.update(density=0)])
def test_report_leaves_out_a_result_whose_config_lacks_a_field(damage, tmp_path, capsys):
    path, out = _sweep_file(tmp_path, grid={"density": [0.5, 0.2]}), tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    bad = sorted(out.rglob("result.json"))[0]
    record = json.loads(bad.read_text())
    damage(record["config"])
    bad.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["runs"] == 1 and "left out of the results" in captured.err
    with open(out / "report" / "results.csv") as f:
        assert len(f.read().strip().splitlines()) == 2  # the header and the one good run


# ---- command-line flags (papercuts) ------------------------------------------------------------------------

def test_prune_lists_and_takes_no_training_flags(tmp_path, capsys, cli_error):
    main(["prune", "--help"])
    helptext = capsys.readouterr().out
    assert "--density" in helptext and "--method" in helptext
    assert not any(flag in helptext for flag in ("--epochs", "--lr ", "--optimizer", "--reinit", "--momentum"))
    base = ["prune", "--model", "mlp", "--dataset", "digits", "--out", str(tmp_path / "p")]
    assert main(base + ["--epochs", "3"]) == 2
    assert "--epochs is a training setting and prune --method magnitude does not train" in cli_error()
    assert main(base + ["--reinit"]) == 2
    cli_error()
    assert not (tmp_path / "p").exists()
    assert main(base + ["--method", "imp", "--density", "0.8", "--epochs", "1", "--json"]) == 0  # imp trains
    assert json.loads(capsys.readouterr().out)["density"] == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize("args, says", [(["--invert", "--no-invert"], "--invert and --no-invert are both given"),
                                        (["--no-invert", "--invert"], "--no-invert and --invert are both given"),
                                        (["--no-invert", "--no-invert"], "--no-invert is given twice")])
def test_a_bool_flag_given_both_ways_is_an_error(args, says, tmp_path, cli_error):
    assert main(["prune", "--model", "mlp", "--dataset", "digits", "--out", str(tmp_path / "p"), *args]) == 2
    assert says in cli_error() and not (tmp_path / "p").exists()


# ---- runs: the model fits the data, a finished folder is this run's, settings given once (T4, T9) ---------

TRAIN = ["train", "--model", "mlp", "--dataset", "digits", "--model-options", "width=8", "--epochs", "1",
         "--density", "0.5"]


@pytest.mark.parametrize("args", [["train", "--epochs", "1"], ["prune", "--method", "snip"],
                                  ["prune", "--structure", "units", "--method", "l1"]])
def test_a_model_that_does_not_fit_the_data_is_one_line_before_pruning(args, tmp_path, cli_error):
    assert main([*args, "--model", "resnet20", "--dataset", "synthetic", "--out", str(tmp_path / "o")]) == 2
    err = cli_error()
    assert "model 'resnet20' does not fit data set 'synthetic' (inputs of shape (32,))" in err
    assert "mlp takes any shape" in err
    assert not (tmp_path / "o" / "masks.safetensors").exists() and not (tmp_path / "o" / "units.json").exists()


def test_prune_with_a_method_that_never_runs_the_model_needs_no_fit(tmp_path, capsys):
    assert main(["prune", "--model", "resnet20", "--method", "magnitude", "--out", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["kept"] == round(0.1 * rep["total"]) and (tmp_path / "masks.safetensors").is_file()


def test_the_shape_probe_leaves_the_model_as_it_was():
    from sketchprune import data as datasets
    from sketchprune.experiment import check_fits

    digits = datasets.load("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    check_fits(net, digits, "bn-mlp")
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(SketchpruneError, match=r"its output for a batch of 2 is \(2, 3\), not \(2, 10\)"):
        check_fits(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), digits, "three")


def test_train_on_a_folder_with_a_damaged_or_foreign_result_is_one_line(tmp_path, cli_error, capsys):
    out, other = tmp_path / "run", tmp_path / "other"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    assert main([*TRAIN, "--density", "0.2", "--out", str(other), "--json"]) == 2  # --density twice
    cli_error()
    assert main([*TRAIN[:-2], "--density", "0.2", "--out", str(other), "--json"]) == 0
    good = (out / "result.json").read_text()
    (out / "result.json").write_text(good[:50])
    capsys.readouterr()
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert f"delete {out} to run it again" in cli_error()
    (out / "result.json").write_text((other / "result.json").read_text())  # another run's result
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert "is the result of another run" in cli_error()
    (out / "result.json").write_text(good)
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["density_actual"] == pytest.approx(0.5, abs=0.01)


def test_a_killed_runs_temporary_files_are_cleaned_when_it_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    (out / "result.json").unlink()  # as if killed before the end
    stale = [out / ".checkpoint.0123abcd.pt.tmp", out / ".metrics.89abcdef.jsonl.tmp"]
    (out / "imp-level-0").mkdir()
    stale.append(out / "imp-level-0" / ".checkpoint.00ff00ff.pt.tmp")
    for p in stale:
        p.write_text("")
    assert main([*TRAIN, "--out", str(out), "--json"]) == 0
    assert not any(p.exists() for p in stale) and (out / "result.json").is_file()


def test_a_setting_given_dotted_and_in_its_mapping_is_an_error():
    from sketchprune.experiment import make_config

    with pytest.raises(SketchpruneError, match=r"train.epochs is given twice"):
        make_config({"train": {"epochs": 3}, "train.epochs": 1})
    with pytest.raises(SketchpruneError, match=r"model_options.width is given twice"):
        make_config({"model": "mlp", "model_options": {"width": 8}, "model_options.width": 16})
    assert make_config({"train": {"lr": 0.5}, "train.epochs": 1}).train.epochs == 1  # different keys: fine


def test_the_sweep_file_with_a_setting_twice_is_refused(tmp_path, cli_error):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"fixed": {**FIXED, "train": {"epochs": 3}}, "grid": {"density": [0.5]}}))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "train.epochs is given twice" in cli_error()


@pytest.mark.parametrize("written", ["２:４", " 2:4", "2:04", "２：４", "٢:٤"])
def test_an_nm_pattern_in_other_digits_is_the_run_of_2_4(written):
    from sketchprune.config import config_hash
    from sketchprune.experiment import make_config

    cfg = make_config({"nm": written})
    assert cfg.nm == "2:4" and config_hash(cfg) == config_hash(make_config({"nm": "2:4"}))


@pytest.mark.parametrize("bad", ["2:4:8", "4:2", "0:4", "a:b", "2/4"])
def test_an_nm_pattern_that_is_not_one_is_refused(bad):
    from sketchprune.experiment import make_config

    with pytest.raises(SketchpruneError, match="nm must look like 2:4"):
        make_config({"nm": bad})


# ---- the CLI's thread policy (under load) --------------------------------------------------------------------

@pytest.mark.parametrize("setting, environ, cores, load, expected", [
    ("1", {}, 2, 0.0, 1), ("4", {}, 2, 7.0, 4), ("torch", {}, 2, 7.0, None),
    ("auto", {}, 2, 7.0, 1), ("auto", {}, 2, 0.2, 2), ("auto", {}, 16, 0.3, 16), ("auto", {}, 8, 3.4, 5),
    (None, {}, 2, 7.0, 1), (None, {"OMP_NUM_THREADS": "2"}, 2, 7.0, None),
    (None, {"SKETCHPRUNE_THREADS": "3", "OMP_NUM_THREADS": "2"}, 2, 7.0, 3), (" Auto ", {}, 4, 1.0, 3),
])
def test_thread_count(setting, environ, cores, load, expected):
    from sketchprune.cli import thread_count

    assert thread_count(setting, environ, cores=cores, load=load) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_is_one_line(bad, cli_error):
    assert main(["--threads", bad, "methods", "--json"]) == 2
    assert "must be a number >= 1, auto or torch" in cli_error()


def test_the_thread_setting_applies_at_the_command_line_only(capsys):
    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "methods", "--json"]) == 0
        assert torch.get_num_threads() == 1
        import sketchprune  # noqa: F401  (importing the library changes nothing)

        torch.set_num_threads(2)
        prune(nn.Sequential(nn.Linear(6, 3)), "magnitude", 0.5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
