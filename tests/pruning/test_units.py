"""prune_units (pruning/units.py): whole units removed, exact counts, any model, param and MAC targets, rescaling."""

import warnings

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, models
from sketchprune.costs import costs
from sketchprune.pruning import prune_units


def linear_widths(model):
    return [m.out_features for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("method", ["sketch", "l1", "random", "3sp", "synflow"])
@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_exact_unit_counts_and_same_inputs_outputs(method, mode, units_mlp):
    model = units_mlp()
    data = [(torch.randn(30, 12), torch.randint(0, 3, (30,)))]
    small = prune_units(model, method, 0.5, mode=mode, data=data)
    assert linear_widths(small) == [10, 8, 3]  # half of each hidden layer; the outputs all kept
    assert small(torch.randn(4, 12)).shape == (4, 3)
    assert linear_widths(model) == [20, 16, 3]  # the model given is left as it was


def test_removing_units_that_carry_nothing_changes_no_output(units_mlp):
    model = units_mlp()
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


def test_same_seed_same_network(units_mlp):
    model = units_mlp()
    a, b, c = (prune_units(model, "sketch", 0.5, mode="sample", seed=s, input_shape=(12,)) for s in (1, 1, 2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(sa[k].shape != sc[k].shape or not torch.equal(sa[k], sc[k]) for k in sa)


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


def test_rescale_multiplies_kept_units_outgoing_weights_by_one_over_pi(units_mlp):
    model = units_mlp(bias=False)
    plain = prune_units(model, "l1", 0.5, mode="sample", seed=3, input_shape=(12,))
    scaled = prune_units(model, "l1", 0.5, mode="sample", seed=3, input_shape=(12,), rescale=True)
    assert torch.equal(plain[0].weight, scaled[0].weight)  # the same units, their own weights unchanged
    ratio = scaled[2].weight / plain[2].weight
    assert bool((ratio >= 1 - 1e-6).all()) and bool((ratio > 1 + 1e-6).any())  # 1/pi >= 1
    with pytest.raises(SketchpruneError, match="rescale applies to sampled"):
        prune_units(model, "l1", 0.5, rescale=True, input_shape=(12,))


def test_bad_input(units_mlp):
    with pytest.raises(SketchpruneError, match="has no unit form"):
        prune_units(units_mlp(), "magnitude", 0.5, input_shape=(12,))
    with pytest.raises(SketchpruneError, match="needs data"):
        prune_units(units_mlp(), "3sp", 0.5, input_shape=(12,))
    with pytest.raises(SketchpruneError, match="keep must be"):
        prune_units(units_mlp(), "l1", 0, input_shape=(12,))
