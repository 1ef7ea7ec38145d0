"""Random bad input to select, prune and sweep files: a SketchpruneError (or exit 2) and nothing left
behind, never another exception.

Each example starts from a valid call and replaces one argument with a random value, so every
argument's check is reached (a value refused earlier would hide a later argument's crash)."""

import math
import warnings

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
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


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
