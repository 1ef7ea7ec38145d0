"""Parameters and multiply-accumulates of a network, dense and masked, against a hand count."""

import torch
from torch import nn

from sketchprune import Masks
from sketchprune.costs import _layer_macs, cost_fractions, costs


def conv_then_linear(bias: bool = True) -> nn.Module:
    # input (2, 8): the conv makes 3 channels x 6 positions = 18 features
    return nn.Sequential(nn.Conv1d(2, 3, 3, bias=bias), nn.ReLU(), nn.Flatten(), nn.Linear(18, 4, bias=bias))


def test_dense_costs_by_hand():
    # conv: 3*2*3 = 18 weights, each used at 6 positions (108 MACs), 3 biases added at 18 outputs;
    # ReLU: one op per element (18); linear: 18*4 = 72 weights (72 MACs) and 4 biases
    assert costs(conv_then_linear(), (2, 8)) == {"params": 18 + 3 + 72 + 4, "macs": 108 + 18 + 18 + 72 + 4}
    assert costs(conv_then_linear(bias=False), (2, 8)) == {"params": 18 + 72, "macs": 108 + 18 + 72}
    assert _layer_macs(conv_then_linear(), torch.zeros(1, 2, 8)) == {"0.weight": 108.0, "3.weight": 72.0}


def test_masked_costs_count_kept_weights_and_scale_each_layer_macs_by_its_density():
    model = conv_then_linear()
    conv = torch.zeros(18, dtype=torch.bool)
    conv[:9] = True  # half the conv's weights
    lin = torch.zeros(72, dtype=torch.bool)
    lin[::4] = True  # a quarter of the linear's
    masks = Masks({"0.weight": conv.view(3, 2, 3), "3.weight": lin.view(4, 18)})
    got = costs(model, (2, 8), dict(masks))
    assert got == {"params": 97 - 9 - 54, "macs": 220 - 108 * 0.5 - 72 * 0.75}
    assert cost_fractions(got, costs(model, (2, 8))) == {"params_fraction": 34 / 97, "macs_fraction": 112 / 220}
