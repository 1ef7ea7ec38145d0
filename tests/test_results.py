"""Results: the Result record and its file (result.json), and the run-folder layout."""

import json

import pytest

from sketchprune import SketchpruneError
from sketchprune.atomic import write_json
from sketchprune.experiment import RunConfig, run
from sketchprune.results import Result, collect, load_result, read_result, run_folder, run_name, status
from sketchprune.train import TrainConfig

# the keys of result.json, in the order every run has written them (report and old result files rely on them)
RESULT_KEYS = ["config", "hash", "compression", "final_test_acc", "best_test_acc", "final_train_loss", "kept",
               "total", "density_actual", "collapsed", "layer_density", "diagnostics", "auto", "params_fraction",
               "macs_fraction", "prune_seconds", "wall_seconds"]


def a_result(**changes) -> Result:
    values = dict(config={"method": "snip", "mode": "sample", "density": 0.25, "seed": 1, "model": "mlp",
                          "dataset": "digits"},
                  hash="0123456789ab", compression=4.0, final_test_acc=0.75, best_test_acc=0.8,
                  final_train_loss=0.5, kept=30, total=120, density_actual=0.25, collapsed=["2.weight"],
                  layer_density={"0.weight": 0.5, "2.weight": 0.0}, diagnostics={"connected": False},
                  auto={"mode": "sample", "power": 1.0}, params_fraction=0.3, macs_fraction=0.2,
                  prune_seconds=1.5, wall_seconds=9.0)
    return Result(**{**values, **changes})


def test_a_result_round_trips_through_its_record_and_file(tmp_path):
    r = a_result()
    record = r.to_dict()
    assert list(record) == RESULT_KEYS
    assert Result.from_dict(record) == r
    record["layer_density"]["0.weight"] = 1.0  # the record is a copy
    assert r.layer_density["0.weight"] == 0.5
    write_json(tmp_path / "result.json", r.to_dict())
    assert load_result(tmp_path / "result.json") == r == read_result(tmp_path / "result.json")
    assert list(json.loads((tmp_path / "result.json").read_text())) == RESULT_KEYS


def test_records_from_before_diagnostics_and_costs_read_as_none():
    record = a_result().to_dict()
    for key in ("diagnostics", "auto", "params_fraction", "macs_fraction"):  # first recorded in a later version
        del record[key]
    r = Result.from_dict(record)
    assert (r.diagnostics, r.auto, r.params_fraction, r.macs_fraction) == (None, None, None, None)
    assert r.kept == 30


@pytest.mark.parametrize("damage, says", [
    (lambda d: d.pop("final_test_acc"), "lacks final_test_acc"),
    (lambda d: (d.pop("kept"), d.pop("hash")), "lacks hash, kept"),
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d.update(kept="30"), "kept is '30'"),
    (lambda d: d.update(kept=30.0), "kept is 30.0"),
    (lambda d: d.update(final_test_acc=True), "final_test_acc is True"),
    (lambda d: d.update(final_test_acc=None), "final_test_acc is None"),
    (lambda d: d.update(config=[1]), "config is [1]"),
])
def test_a_damaged_record_is_a_one_line_error_naming_the_file(tmp_path, damage, says, one_line_error):
    record = a_result().to_dict()
    damage(record)
    path = tmp_path / "run" / "result.json"
    write_json(path, record)
    with pytest.raises(SketchpruneError) as e:
        load_result(path)
    msg = one_line_error(e)
    assert msg.startswith(f"{path} cannot be read as a result") and says in msg and "--retry-failed" in msg
    assert read_result(path) is None and status(path.parent) == "failed"


def test_damaged_files_missing_files_and_the_folder_status(tmp_path, one_line_error):
    path = tmp_path / "result.json"
    for text, says in (('{"config": ', "JSONDecodeError"), ("[1, 2]", "it holds list, not a JSON object")):
        path.write_text(text)
        with pytest.raises(SketchpruneError) as e:
            load_result(path)
        assert str(path) in one_line_error(e) and says in str(e.value)
    assert read_result(tmp_path / "missing.json") is None
    assert status(tmp_path / "nothing") == "todo"
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "error.json").write_text("{}")
    assert status(tmp_path / "failed") == "failed"
    write_json(tmp_path / "done" / "result.json", a_result().to_dict())
    assert status(tmp_path / "done") == "done"


def test_collect_reads_every_result_in_a_stable_order_and_leaves_out_damaged_ones(tmp_path):
    for i, h in enumerate(["bbb", "aaa", "ccc"]):
        write_json(tmp_path / "runs" / h / "result.json", a_result(hash=h, kept=i).to_dict())
    (tmp_path / "runs" / "ddd").mkdir()
    (tmp_path / "runs" / "ddd" / "result.json").write_text("{}")
    with pytest.warns(RuntimeWarning, match=r"ddd/result.json cannot be read as a result: it lacks config"):
        got = collect(tmp_path)
    assert [(r.hash, r.kept) for r in got] == [("aaa", 1), ("bbb", 0), ("ccc", 2)]


def test_run_folders_are_named_by_the_config_hash(tmp_path):
    cfg = RunConfig()
    assert run_folder(tmp_path, cfg) == tmp_path / "runs" / "a49c17bef0e9"  # the pinned hash (test_config)
    assert run_name(cfg) == "magnitude-topk-d0.1-s0-a49c17bef0e9"
    assert run_name(RunConfig(method="synflow", density=0.01, mode="sample")) == "synflow-sample-d0.01-s0-ebd8308c6cf5"


@pytest.mark.parametrize("structure", ["weights", "units"])
def test_a_run_returns_the_result_it_writes_and_identical_runs_write_identical_masks(tmp_path, digits, structure):
    extra = {"method": "l1", "keep_by": "params"} if structure == "units" else {"method": "snip", "mode": "sample"}
    cfg = RunConfig(model="mlp", dataset="digits", model_options={"width": 16}, density=0.3, structure=structure,
                    train=TrainConfig(epochs=1, optimizer="adam", lr=3e-3, weight_decay=0), **extra)
    a = run(cfg, tmp_path / "a", dataset=digits)
    assert isinstance(a, Result) and load_result(tmp_path / "a" / "result.json") == a
    assert list(json.loads((tmp_path / "a" / "result.json").read_text())) == RESULT_KEYS
    assert run(cfg, tmp_path / "a") == a  # finished: read back, not run again
    assert a.density_actual == pytest.approx(a.kept / a.total) and a.compression == pytest.approx(1 / 0.3)
    if structure == "units":
        assert (a.diagnostics, a.auto, a.collapsed) == (None, None, [])
        assert a.params_fraction == a.density_actual and json.loads((tmp_path / "a" / "units.json").read_text())
    else:
        b = run(cfg, tmp_path / "b", dataset=digits)
        masks = [(tmp_path / d / "masks.safetensors").read_bytes() for d in "ab"]
        assert masks[0] == masks[1] and (a.kept, a.final_test_acc) == (b.kept, b.final_test_acc)
        assert a.diagnostics is not None and a.params_fraction < 1
