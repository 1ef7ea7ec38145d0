"""Structured pruning (prune_units), sparse and N:M export, and E7's structured sketch."""

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sketchprune import Masks, SketchpruneError, methods, models, prune
from sketchprune.export import sparse
from sketchprune.nm import nm_mask, project_nm
from sketchprune.costs import costs
from sketchprune.pruning import prune_units


def mlp(seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20, bias=bias), nn.ReLU(), nn.Linear(20, 16, bias=bias), nn.ReLU(),
                         nn.Linear(16, 3, bias=bias))


def linear_widths(model):
    return [m.out_features for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("method", ["sketch", "l1", "random", "3sp", "synflow"])
@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_exact_unit_counts_and_same_inputs_outputs(method, mode):
    model = mlp()
    data = [(torch.randn(30, 12), torch.randint(0, 3, (30,)))]
    small = prune_units(model, method, 0.5, mode=mode, data=data)
    assert linear_widths(small) == [10, 8, 3]  # half of each hidden layer; the outputs all kept
    assert small(torch.randn(4, 12)).shape == (4, 3)
    assert linear_widths(model) == [20, 16, 3]  # the model given is left as it was


def test_removing_units_that_carry_nothing_changes_no_output():
    model = mlp()
    dead = [1, 4, 5, 11, 17]
    with torch.no_grad():  # these units receive nothing: their activation is relu(0) = 0
        model[0].weight[dead] = 0
        model[0].bias[dead] = 0
    small = prune_units(model, "l1", 15 / 20, input_shape=(12,), exclude=[model[2]])  # only the first layer
    small_widths = linear_widths(small)
    assert small_widths[0] == 15
    kept = [i for i in range(20) if i not in dead]
    assert torch.equal(small[0].weight, model[0].weight[kept])  # exactly the dead units went
    x = torch.randn(64, 12)
    assert torch.allclose(small(x), model(x), atol=1e-6)


def test_same_seed_same_network():
    model = mlp()
    a, b, c = (prune_units(model, "sketch", 0.5, mode="sample", seed=s, input_shape=(12,)) for s in (1, 1, 2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(sa[k].shape != sc[k].shape or not torch.equal(sa[k], sc[k]) for k in sa)


def unit_scores(model: nn.Module, method: str, data, input_shape) -> list[torch.Tensor]:
    """The unit form of ``method`` on the hidden layer of a two-layer network (its output layer ignored)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=data[0][0][:1])
    groups = list(graph.get_all_groups(ignored_layers=[model[2]], root_module_types=(nn.Linear,)))
    spec = methods.get(method)
    return spec.units(methods.UnitContext(spec, model, groups, spec.options(), torch.Generator(), data, input_shape))


def test_sketch_score_is_the_norm_of_each_units_term():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(40, 6)
    (score,) = unit_scores(model, "sketch", [(x, torch.zeros(40, dtype=torch.long))], (6,))
    H = torch.relu(model[0](x)).detach()  # the next layer's input: unit i's row of H
    want = model[2].weight.detach().norm(dim=0) * H.norm(dim=0)
    assert torch.allclose(score.float(), want, rtol=1e-5)


def test_3sp_is_the_gate_saliency_per_mac():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    (score,) = unit_scores(model, "3sp", [(x, y)], (6,))
    gate = torch.ones(8, requires_grad=True)  # a gate on each hidden unit, written out
    out = model[2](torch.relu(model[0](x) * gate))
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y, reduction="sum"), gate)
    macs_per_unit = 6 + 3  # its row of the first layer and its column of the second
    assert torch.allclose(score.float(), g.abs() / macs_per_unit, rtol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "conv", "conv1d", "deep-linear", "resnet20", "vgg11_bn", "vgg11", "wrn",
                                  "resnet18"])
def test_every_registry_model(name):
    torch.manual_seed(0)
    kw = {"width": 8} if name in ("conv", "conv1d", "resnet20", "resnet18") else {"width": 0.125} \
        if name.startswith("vgg") else {"width": 1} if name == "wrn" else {}
    model = models.create(name, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = prune_units(model, "sketch", 0.5)
    x = torch.randn(2, *model.input_shape)
    assert small(x).shape == model(x).shape
    assert costs(small, model.input_shape)["params"] < costs(model, model.input_shape)["params"]


def test_a_users_residual_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(16, 16, 3, padding=1)
            self.bn = nn.BatchNorm2d(16)
            self.head = nn.Linear(16 * 8 * 8, 5)

        def forward(self, x):
            h = torch.relu(self.a(x))
            h = h + self.bn(self.b(h))  # a residual addition couples a's and b's channels
            return self.head(h.flatten(1))

    torch.manual_seed(0)
    model = Net()
    small = prune_units(model, "sketch", 0.5, input_shape=(3, 8, 8))
    assert small.a.out_channels == small.b.out_channels == 8 and small.head.in_features == 8 * 64
    assert small(torch.randn(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize("keep_by", ["params", "macs"])
def test_param_and_mac_targets(keep_by):
    torch.manual_seed(0)
    model = models.create("resnet20", width=8)
    small = prune_units(model, "l1", 0.3, keep_by=keep_by)
    got = costs(small, (3, 32, 32))[keep_by] / costs(model, (3, 32, 32))[keep_by]
    assert 0.2 <= got <= 0.3


def test_rescale_multiplies_kept_units_outgoing_weights_by_one_over_pi():
    model = mlp(bias=False)
    plain = prune_units(model, "l1", 0.5, mode="sample", seed=3, input_shape=(12,))
    scaled = prune_units(model, "l1", 0.5, mode="sample", seed=3, input_shape=(12,), rescale=True)
    assert torch.equal(plain[0].weight, scaled[0].weight)  # the same units, their own weights unchanged
    ratio = scaled[2].weight / plain[2].weight
    assert bool((ratio >= 1 - 1e-6).all()) and bool((ratio > 1 + 1e-6).any())  # 1/pi >= 1
    with pytest.raises(SketchpruneError, match="rescale applies to sampled"):
        prune_units(model, "l1", 0.5, rescale=True, input_shape=(12,))


def test_bad_input():
    with pytest.raises(SketchpruneError, match="has no unit form"):
        prune_units(mlp(), "magnitude", 0.5, input_shape=(12,))
    with pytest.raises(SketchpruneError, match="needs data"):
        prune_units(mlp(), "3sp", 0.5, input_shape=(12,))
    with pytest.raises(SketchpruneError, match="keep must be"):
        prune_units(mlp(), "l1", 0, input_shape=(12,))


# ---- export: CSR and N:M ----------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), groups=st.integers(1, 5), n=st.integers(1, 4), density=st.floats(0.05, 1.0),
       seed=st.integers(0, 1000))
def test_nm_projection_keeps_at_most_n_of_every_m_and_the_largest(rows, groups, n, density, seed):
    m = 4
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(rows, groups * m, generator=g)
    keep = torch.rand(rows, groups * m, generator=g) < density
    out = nm_mask(scores, min(n, m), m, keep)
    assert bool((out <= keep).all())  # a subset of the mask
    per_group = out.view(rows, groups, m).sum(2)
    kept_per_group = keep.view(rows, groups, m).sum(2)
    assert torch.equal(per_group, kept_per_group.clamp(max=min(n, m)))
    # the kept ones are the largest kept scores of their group
    s = scores.masked_fill(~keep, -1).view(rows, groups, m)
    o = out.view(rows, groups, m)
    for r in range(rows):
        for c in range(groups):
            if int(o[r, c].sum()) and int((~o[r, c] & keep.view(rows, groups, m)[r, c]).sum()):
                assert float(s[r, c][o[r, c]].min()) >= float(s[r, c][~o[r, c]].max())


def test_project_nm_on_a_pruned_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    masks = prune(model, "magnitude", 0.8)
    nm = project_nm(masks, model, 2, 4)
    assert all(int(v.view(v.shape[0], -1, 4).sum(2).max()) <= 2 for v in nm.values())
    assert nm.density() <= 0.5 and nm.meta["nm"] == "2:4"


def test_sparse_export_gives_the_same_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    masks = prune(model, "magnitude", 0.05, scope="layer")
    masked = copy.deepcopy(model)
    masks.apply(masked).remove()
    x = torch.randn(16, 64)
    exported = sparse(model, masks, measure=False)
    assert type(exported[0]).__name__ == "SparseLinear"
    assert torch.allclose(exported(x), masked(x), atol=1e-5)
    chosen = sparse(model, masks, example=x)  # timed: whichever is faster, the same function
    assert torch.allclose(chosen(x), masked(x), atol=1e-5)
    assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())  # the model is untouched
    assert not torch.equal(model[0].weight, masked[0].weight)
    with pytest.raises(SketchpruneError, match="needs example"):
        sparse(model, Masks(dict(masks)))


def test_prune_and_train_commands_take_structure_units(tmp_path, capsys):
    import json

    from sketchprune.cli import main

    args = ["--model", "mlp", "--dataset", "digits", "--structure", "units", "--method", "sketch",
            "--density", "0.25", "--keep-by", "macs", "--json"]
    assert main(["prune", *args, "--out", str(tmp_path / "p")]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert 0.2 <= rep["macs_fraction"] <= 0.25 and all(v["kept"] < v["total"] for v in rep["layers"].values())
    assert json.loads((tmp_path / "p" / "units.json").read_text())["layers"] == rep["layers"]
    assert main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "t")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["macs_fraction"] == pytest.approx(rep["macs_fraction"]) and result["final_test_acc"] > 0.1
    assert main(["train", "--structure", "units", "--method", "magnitude", "--out", str(tmp_path / "x")]) == 2
    assert "has no unit form (structure=units)" in capsys.readouterr().err
