"""Random bad input to select, prune and sweep files: a SketchpruneError (or exit 2) and nothing left
behind, never another exception.

Each example starts from a valid call and replaces one argument with a random value, so every
argument's check is reached (a value refused earlier would hide a later argument's crash)."""

import math
import os
import warnings

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sketchprune import SketchpruneError, prune, select
from sketchprune.cli import main
from sketchprune.pruning import COMMON_OPTIONS

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.lists(st.integers(-2, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([torch.tensor([1.0]), (0,), (6,), ("a",), torch.Generator()]),
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                    derandomize=os.environ.get("SKETCHPRUNE_FUZZ") != "random")
"""The same 200 examples every run (CI must not pass or fail by chance); ``SKETCHPRUNE_FUZZ=random``
draws new ones (how ``iterations=1e18``, which allocated until the machine killed the run, was found)."""


REFUSED = object()


def refused_in_one_line(call):
    """Run ``call``: its result, or ``REFUSED`` when it raised a one-line SketchpruneError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call()
        except SketchpruneError as e:
            assert "\n" not in str(e)
            return REFUSED


SELECT_BASE = {"density": 0.5, "mode": "sample", "scheme": "exact", "power": 1.0, "scope": "global",
               "log_scores": False, "generator": None}


@SETTINGS
@given(which=st.sampled_from([*SELECT_BASE, "scores"]), junk=JUNK,
       fill=st.sampled_from([0.5, 0.0, -1.0, math.nan, math.inf, -math.inf]))
def test_select_with_one_random_value(which, junk, fill):
    scores = {"a": torch.rand(5, 4), "b": torch.rand(3)}
    scores["b"][0] = fill
    kwargs = dict(SELECT_BASE)
    if which == "scores":
        scores["b"] = junk
    else:
        kwargs[which] = junk
    got = refused_in_one_line(lambda: select(scores, **kwargs))
    if got is REFUSED:
        return
    # accepted: bool masks of the scores' shapes, and the exact count wherever the count is exact
    assert set(got) == set(scores) and all(got[n].dtype == torch.bool and got[n].shape == scores[n].shape
                                           for n in scores)
    kept, total = sum(int(m.sum()) for m in got.values()), sum(t.numel() for t in scores.values())
    if kwargs["scope"] == "global" and (kwargs["mode"] == "topk" or kwargs["scheme"] == "exact"):
        assert kept == round(kwargs["density"] * total)
    assert 0 <= kept <= total


PRUNE_ARGS = sorted(set(COMMON_OPTIONS) | {"input_shape", "grasp_temperature", "synflow_dtype", "ntk_samples",
                                           "smart_ratio_last", "colour", "seed", "iterations", "data", "density",
                                           "method"})
DATA = [(torch.randn(4, 6), torch.randint(0, 3, (4,)))]


@SETTINGS
@given(method=st.sampled_from(["random", "magnitude", "synflow", "smart_ratio", "snip", "grasp", "sketch"]),
       which=st.sampled_from(PRUNE_ARGS), junk=st.one_of(JUNK, st.sampled_from(
           [5, "x", [(1, 2)], [(torch.randn(4, 5), torch.randint(0, 3, (4,)))], [(torch.randn(4, 6), torch.full((4,), 9))]])))
def test_prune_with_one_random_option(method, which, junk):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    kwargs = {"method": method, "density": 0.5, "data": DATA}
    kwargs[which] = junk
    got = refused_in_one_line(lambda: prune(model, **kwargs))
    if got is REFUSED:
        return
    # accepted: bool masks on prunable parameters of their shapes, the budget kept exactly where it is exact
    params = dict(model.named_parameters())
    assert all(m.dtype == torch.bool and m.shape == params[n].shape for n, m in got.items())
    kept, total = sum(k for k, _ in got.counts().values()), sum(t for _, t in got.counts().values())
    exact = kwargs.get("mode", "topk") != "sample" or kwargs.get("scheme", "exact") == "exact"
    if kwargs.get("scope", "global") == "global" and exact:
        assert kept == round(kwargs["density"] * total)
    assert 1 <= kept <= total
    again = refused_in_one_line(lambda: prune(model, **kwargs))
    assert all(torch.equal(got[n], again[n]) for n in got)  # the same seed, the same mask


SWEEP_BASE = {"fixed": {"model": "mlp", "dataset": "digits", "model_options": {"width": 8}, "train.epochs": 1},
              "grid": {"method": ["magnitude", "grasp"], "density": [0.5, 0.2]}}
SWEEP_KEYS = ["method", "mode", "density", "compression", "seed", "model", "dataset", "scope", "power", "scheme",
              "train.epochs", "train.lr", "train", "model_options", "model_options.width", "grasp_temperature",
              "iterations", "exclude", "colour", "invert", "data_options"]


@SETTINGS
@given(where=st.sampled_from(["fixed", "grid", "top"]), key=st.sampled_from(SWEEP_KEYS + ["device", "data_root"]),
       junk=st.one_of(JUNK, st.lists(JUNK, max_size=3)))
def test_sweep_files_with_one_random_value(where, key, junk, tmp_path_factory):
    spec = {"fixed": dict(SWEEP_BASE["fixed"]), "grid": dict(SWEEP_BASE["grid"])}
    if where == "top":
        spec[key] = junk
    else:
        spec[where][key] = junk
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "s.yaml"
    try:
        path.write_text(yaml.safe_dump(spec))
    except yaml.YAMLError:
        return  # not expressible in YAML (a tensor or a generator): no file to test
    out = folder / "out"
    rc = main(["sweep", str(path), "--out", str(out), "--dry-run", "--json"])
    assert rc in (0, 2)
    if rc == 2:  # refused on a dry run: refused for real too, before anything is written
        assert main(["sweep", str(path), "--out", str(out)]) == 2
        assert not out.exists()


@SETTINGS
@given(spec=st.one_of(JUNK, st.dictionaries(st.sampled_from(["fixed", "grid", "device", "extra"]),
                                            st.one_of(JUNK, st.dictionaries(st.sampled_from(SWEEP_KEYS), JUNK,
                                                                            max_size=3)), max_size=3)))
def test_sweep_files_of_random_shape(spec, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "s.yaml"
    try:
        path.write_text(yaml.safe_dump(spec))
    except yaml.YAMLError:
        return
    assert main(["sweep", str(path), "--out", str(folder / "out"), "--dry-run", "--json"]) in (0, 2)


# ---- output paths: a file, under a file, read-only, a full disk (issue 23, T1) ---------------------------

SMALL_RUN = ["--model", "mlp", "--dataset", "digits", "--model-options", "width=8", "--epochs", "1", "--density", "0.5"]
OUT_COMMANDS = {
    "prune": lambda d: ["prune", "--model", "mlp", "--dataset", "digits"],
    "train": lambda d: ["train", *SMALL_RUN],
    "sweep": lambda d: ["sweep", str(d / "s.yaml")],
    "report": lambda d: ["report", str(d / "done")],
    "theory": lambda d: ["theory", "sketch", "--trials", "2", "--budgets", "5", "--n", "20", "--cases", "heavy"],
    "run": lambda d: ["run", "--methods", "magnitude", "--densities", "0.5", "--seeds", "0", "--epochs", "1",
                      "--dataset", "digits", "--model", "mlp"],
}


@pytest.fixture(scope="module")
def out_cases(tmp_path_factory):
    """A folder with a sweep file, a finished run to report, and a plain file to aim --out at."""
    d = tmp_path_factory.mktemp("out-cases")
    (d / "s.yaml").write_text(yaml.safe_dump({"fixed": {"model": "mlp", "dataset": "digits",
                                                        "model_options": {"width": 8}, "train.epochs": 1},
                                              "grid": {"density": [0.5]}}))
    assert main(["train", *SMALL_RUN, "--out", str(d / "done" / "run"), "--json"]) == 0
    (d / "afile").write_text("not a folder")
    return d


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_cannot_be_a_folder_is_one_line_before_any_work(command, where, out_cases, cli_error, capsys):
    capsys.readouterr()
    out = out_cases / "afile" if where == "a file" else out_cases / "afile" / "sub" / "dir"
    assert main([*OUT_COMMANDS[command](out_cases), "--out", str(out)]) == 2
    err = cli_error()
    assert str(out) in err and ("is a file" in err or "sits under" in err)
    assert (out_cases / "afile").read_text() == "not a folder"  # the file in the way is left as it was


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (os.access says so too)")
@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_in_a_read_only_folder_is_one_line(command, out_cases, tmp_path, cli_error, capsys):
    capsys.readouterr()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main([*OUT_COMMANDS[command](out_cases), "--out", str(locked / "out")]) == 2
        assert "not writable" in cli_error() and not (locked / "out").exists()
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["prune", "train", "theory", "report"])
def test_a_full_disk_is_one_line_naming_the_file(command, out_cases, tmp_path, monkeypatch, cli_error, capsys):
    import errno

    from sketchprune import atomic

    capsys.readouterr()

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")  # what write() raises: no file name

    monkeypatch.setattr(atomic.os, "replace", full)
    out = tmp_path / "out"
    assert main([*OUT_COMMANDS[command](out_cases), "--out", str(out)]) == 2
    err = cli_error()
    assert "no space left on device" in err and str(out) in err and "free disk space" in err
    assert not [p for p in out.rglob("*.tmp")]  # the temporary file of the failed write is gone


def test_torch_save_on_a_full_disk_reads_as_no_space(tmp_path, monkeypatch):
    import errno

    from sketchprune import atomic

    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)
    with pytest.raises(OSError) as e:
        with atomic.atomic_path(tmp_path / "checkpoint.pt") as tmp:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 409792 vs 409680")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "checkpoint.pt")
    monkeypatch.setattr(atomic, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError):  # a RuntimeError with room on the disk is not a full disk
        with atomic.atomic_path(tmp_path / "checkpoint.pt") as tmp:
            raise RuntimeError("something else")
    assert not list(tmp_path.iterdir())


# ---- theory at degenerate sizes: a valid result, never a division by zero (issue 23, T11) -----------------

THEORY_EDGES = [
    ("linear", ["--d", "1", "--draws", "2", "--steps", "2", "--ratios", "1", "--scales", "1"]),
    ("linear", ["--d", "2", "--densities", "1", "--draws", "2", "--steps", "2", "--ratios", "1", "--scales", "1"]),
    ("linear", ["--n", "2", "--d", "2", "--draws", "2", "--steps", "0", "--ratios", "0.01", "--scales", "1"]),
    ("ntk", ["--n", "1", "--d", "1", "--width", "1", "--outputs", "1", "--trials", "2"]),
    ("structured", ["--width", "2", "--budgets", "2", "--n", "1", "--d-in", "1", "--d-out", "1", "--trials", "2"]),
    ("sketch", ["--m", "1", "--n", "1", "--p", "1", "--budgets", "1", "--trials", "2"]),
    ("data", ["--d", "1", "--draws", "2", "--steps", "2"]),
]


@pytest.mark.parametrize("name, args", THEORY_EDGES)
def test_theory_at_degenerate_sizes_gives_a_valid_result(name, args, tmp_path, capsys):
    import json

    assert main(["theory", name, *args, "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / f"{name}.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert result["rows"] and all(v is None or not isinstance(v, float) or not math.isnan(v)
                                  for r in result["rows"] for v in r.values())
    if "reading" in result:
        assert "nan" not in result["reading"]["text"]
    if name == "linear" and "--d" in args and args[args.index("--d") + 1] == "1":
        # one feature: every mask keeps it, so every error is 0 and no ratio is defined
        assert all(r["k"] == 1 and r["final_exact"] == 0 for r in result["rows"])
        assert "n/a random's" in result["reading"]["text"]


# ---- mask files with damaged metadata; saving to a folder (issue 23, T5 and T12) --------------------------

def _mask_file(path, metadata):
    from sketchprune.atomic import write_safetensors

    write_safetensors(path, {"w": torch.ones(2, 3, dtype=torch.bool)}, metadata)
    return path


@pytest.mark.parametrize("key, value", [("shapes", "not json {"), ("shapes", "[1, 2]"), ("shapes", '"w"'),
                                        ("shapes", '{"w": [2, 3], "v": [1]}'), ("user", "{oops"),
                                        ("user", "[1, 2]"), ("user", "3"), ("shapes", '{"w": "2x3"}')])
def test_mask_file_with_damaged_metadata_is_one_line(key, value, tmp_path):
    from sketchprune import Masks

    meta = {"format": "sketchprune.masks", "format_version": "1", "shapes": '{"w": [2, 3]}', "user": "{}"}
    path = _mask_file(tmp_path / "m.safetensors", {**meta, key: value})
    with pytest.raises(SketchpruneError) as e:
        Masks.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    if key == "user":
        with pytest.raises(SketchpruneError):
            Masks.load_metadata(path)
    good = Masks.load(_mask_file(tmp_path / "ok.safetensors", meta))  # the same file undamaged loads exactly
    assert good.counts() == {"w": (6, 6)} and good["w"].dtype == torch.bool and good.meta == {}


def test_masks_save_to_a_folder_or_with_non_json_metadata_is_one_line(tmp_path):
    from sketchprune import Masks

    masks = Masks({"w": torch.tensor([True, False])}, meta={"method": "x"})
    with pytest.raises(SketchpruneError, match="is a folder; pass the path of a file"):
        masks.save(tmp_path)
    with pytest.raises(SketchpruneError, match="metadata must be JSON"):
        masks.save(tmp_path / "m.safetensors", metadata={"when": object()})
    assert list(tmp_path.iterdir()) == []
    back = Masks.load(masks.save(tmp_path / "m.safetensors"))
    assert back.counts() == {"w": (1, 2)} and back.meta == {"method": "x"}


# ---- damaged run-folder files of every kind: one line, or a run whose result is the undamaged one's -------

def _damages(original: bytes) -> dict[str, bytes]:
    middle = len(original) // 2
    return {"empty": b"", "truncated": original[:middle], "garbage": b"\x00\xff garbage \xfe" * 3,
            "json-object": b"{}", "json-list": b"[1, 2]",
            "flipped": original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:]
            if original else b"x"}


RUN_KINDS = {  # a finished run of each kind, and the files it holds
    "weights": [], "imp": ["--method", "imp", "--imp-fraction", "0.5", "--imp-rewind-steps", "2"],
    "units": ["--structure", "units", "--method", "l1"],
}


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    import contextlib
    import io

    root = tmp_path_factory.mktemp("finished")
    for kind, extra in RUN_KINDS.items():
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", *SMALL_RUN, *extra, "--out", str(root / kind), "--json"]) == 0
    return root


FOLDER_FILES = [(kind, name) for kind, names in {
    "weights": ["config.json", "masks.safetensors", "checkpoint.pt", "metrics.jsonl", "result.json"],
    "imp": ["start.safetensors", "masks.safetensors", "imp-level-0/checkpoint.pt"],
    "units": ["units.json", "checkpoint.pt", "metrics.jsonl", "config.json"],
}.items() for name in names]


@pytest.mark.parametrize("kind, name", FOLDER_FILES)
@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "json-object", "json-list", "flipped"])
def test_a_damaged_run_folder_file_is_one_line_or_the_run_is_whole(kind, name, damage, finished_runs, tmp_path,
                                                                  capsys):
    import json
    import shutil

    from sketchprune.results import load_result

    ref = finished_runs / kind
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    if name != "result.json":
        (run / "result.json").unlink()  # an unfinished run: the file is read when it resumes
    target = run / name
    target.write_bytes(_damages(target.read_bytes())[damage])
    capsys.readouterr()
    rc = main(["train", *SMALL_RUN, *RUN_KINDS[kind], "--out", str(run), "--json"])
    captured = capsys.readouterr()
    if rc == 2:
        err = [line for line in captured.err.strip().splitlines() if not line.startswith("warning:")]
        assert len(err) == 1 and err[0].startswith("error: ") and (name.split("/")[-1] in err[0] or
                                                                   str(run) in err[0]), captured.err
        return
    assert rc == 0, captured.err
    # accepted: the run is whole again and its result is the undamaged run's (the same masks and counts)
    got, want = load_result(run / "result.json"), load_result(ref / "result.json")
    assert (got.hash, got.kept, got.total, got.layer_density) == (want.hash, want.kept, want.total,
                                                                 want.layer_density)
    lines = (run / "metrics.jsonl").read_text().strip().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    if kind == "units":
        assert json.loads((run / "units.json").read_text()) == json.loads((ref / "units.json").read_text())


@pytest.mark.parametrize("damage", ["empty", "garbage", "json-object", "json-list"])
def test_a_damaged_error_json_is_a_failed_run_that_retry_reruns(damage, tmp_path, capsys):
    import json

    from sketchprune.results import status

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"fixed": {"model": "mlp", "dataset": "digits", "model_options": {"width": 8},
                                              "train.epochs": 1}, "grid": {"density": [0.5]}}))
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--json"]) == 0
    (run,) = (out / "runs").iterdir()
    (run / "result.json").unlink()
    (run / "error.json").write_bytes(_damages(b'{"error": "x"}')[damage])
    assert status(run) == "failed"
    capsys.readouterr()
    assert main(["sweep", str(spec), "--out", str(out), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed_earlier"] == 1
    assert main(["sweep", str(spec), "--out", str(out), "--json", "--retry-failed"]) == 0
    assert status(run) == "done" and not (run / "error.json").exists()


# ---- zero-size shapes: refused in one line, or masks with the exact budget -------------------------------

@SETTINGS
@given(widths=st.tuples(st.integers(0, 3), st.integers(0, 3)), samples=st.integers(0, 3),
       method=st.sampled_from(["random", "magnitude", "snip", "synflow", "grasp", "sketch", "lamp", "smart_ratio"]),
       scope=st.sampled_from(["global", "layer", "erk"]), density=st.sampled_from([0.5, 1.0, 0.01]))
def test_prune_with_zero_size_layers_or_batches(widths, samples, method, scope, density):
    torch.manual_seed(0)
    a, b = widths
    model = nn.Sequential(nn.Linear(6, a), nn.ReLU(), nn.Linear(a, b), nn.ReLU(), nn.Linear(b, 3))
    data = [(torch.randn(samples, 6), torch.arange(samples) % 3)]
    got = refused_in_one_line(lambda: prune(model, method, density, scope=scope, data=data))
    if got is REFUSED:
        return
    params = dict(model.named_parameters())
    assert all(m.dtype == torch.bool and m.shape == params[n].shape for n, m in got.items())
    kept, total = sum(k for k, _ in got.counts().values()), sum(t for _, t in got.counts().values())
    assert total == sum(p.numel() for n, p in params.items() if n.endswith("weight"))
    if scope == "global":
        assert kept == round(density * total)
    assert 1 <= kept <= total


@pytest.mark.parametrize("rows, cols", [(0, 5), (5, 0), (0, 0)])
def test_select_on_zero_size_scores(rows, cols):
    scores = {"empty": torch.rand(rows, cols), "full": torch.rand(4, 3)}
    for scope in ("global", "layer"):
        got = refused_in_one_line(lambda: select(scores, 0.5, scope=scope))
        assert got is not REFUSED
        assert got["empty"].shape == (rows, cols) and got["empty"].dtype == torch.bool
        assert int(got["full"].sum()) == 6


# ---- model outputs of every shape: refused in one line that names the output, or exact masks -------------

OUTPUTS = {
    "logits": lambda h: h, "flat": lambda h: h.sum(1), "sequence": lambda h: h.unsqueeze(-1).expand(-1, -1, 4),
    "scalar": lambda h: h.sum(), "tuple": lambda h: (h, h.sum()), "list": lambda h: [h], "dict": lambda h: {"y": h},
    "none": lambda h: None, "int": lambda h: 3,
}


class Shaped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.a, self.b = kind, nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return OUTPUTS[self.kind](self.b(torch.relu(self.a(x))))


@pytest.mark.parametrize("kind", sorted(OUTPUTS))
@pytest.mark.parametrize("method", ["snip", "grasp", "synflow", "sketch", "px", "ntk", "ntk_sap", "prospr",
                                    "force", "phew", "magnitude"])
def test_model_outputs_of_every_shape(kind, method):
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 3
    got = refused_in_one_line(lambda: prune(Shaped(kind), method, 0.25, data=[(x, y)], input_shape=(6,)))
    if got is REFUSED:
        if kind in ("tuple", "list", "dict", "none", "int") and method not in ("phew", "magnitude"):
            with pytest.raises(SketchpruneError, match=f"returns a {type(OUTPUTS[kind](torch.zeros(1, 3))).__name__}"):
                prune(Shaped(kind), method, 0.25, data=[(x, y)], input_shape=(6,))
        return
    assert got.counts().keys() == {"a.weight", "b.weight"}
    assert sum(k for k, _ in got.counts().values()) == 18  # a quarter of 48 + 24, exactly
    assert all(m.dtype == torch.bool for m in got.values())


def test_a_mask_file_with_a_changed_data_byte_is_refused(tmp_path):
    from sketchprune import Masks
    from sketchprune.atomic import read_safetensors, write_safetensors

    masks = Masks({"a": torch.tensor([True, False, False, True]), "b": torch.zeros(2, 2, dtype=torch.bool)})
    path = masks.save(tmp_path / "m.safetensors")
    raw = bytearray(path.read_bytes())
    for i in range(1, 9):  # every data byte (the data is the file's end), one at a time
        changed = bytearray(raw)
        changed[-i] = 1 - changed[-i] if changed[-i] in (0, 1) else 0
        (tmp_path / "c.safetensors").write_bytes(bytes(changed))
        with pytest.raises(SketchpruneError, match="digest differs"):
            Masks.load(tmp_path / "c.safetensors")
    tensors, meta = read_safetensors(path, fix="-")
    del meta["sha256"]  # a file written before the digest: read as it is
    write_safetensors(tmp_path / "old.safetensors", tensors, meta)
    assert Masks.load(tmp_path / "old.safetensors").counts() == {"a": (2, 4), "b": (0, 4)}
