"""Conv2d as matrix products (methods/_conv_as_matmul.py): the layer's own forward and gradients, batch 1, float64."""

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from sketchprune.methods import _conv_as_matmul as conv_as_matmul
from sketchprune.methods._conv_as_matmul import convs_as_matmuls


def values_and_grads(net: nn.Sequential, x: torch.Tensor, swap: bool):
    x = x.clone().requires_grad_(True)
    if swap:
        with convs_as_matmuls(net):
            out = net(x)
    else:
        out = net(x)
    # a weighted sum, so that every output position gets its own gradient
    weights = torch.arange(1, out.numel() + 1, dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * weights).sum(), [x, *net.parameters()])
    return out.detach(), grads


@settings(max_examples=40, deadline=None)
@given(cin=st.integers(1, 5), cout=st.integers(1, 6), k=st.integers(1, 3), stride=st.integers(1, 2),
       pad=st.integers(0, 2), dil=st.integers(1, 2), size=st.integers(1, 6), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matmul_path_equals_conv2d(cin, cout, k, stride, pad, dil, size, bias, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, bias=bias).double()
    net = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(cout, 2, 1).double())  # the second layer takes its input's gradient
    x = torch.randn(1, cin, size, size, dtype=torch.float64)
    oh = (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
    assume(1 <= oh and oh * oh <= conv_as_matmul.MAX_POSITIONS)  # the matrix path is the one under test
    want, want_grads = values_and_grads(net, x, swap=False)
    got, got_grads = values_and_grads(net, x, swap=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_other_calls_run_the_layer_itself_and_the_model_is_restored():
    torch.manual_seed(0)
    conv32 = nn.Conv2d(3, 4, 3, padding=1)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2).double()
    for x, m in [(torch.randn(1, 3, 3, 3), conv32),  # float32
                 (torch.randn(2, 3, 3, 3, dtype=torch.float64), conv),  # a batch of two
                 (torch.randn(1, 3, 8, 8, dtype=torch.float64), conv),  # 64 positions
                 (torch.randn(1, 4, 3, 3, dtype=torch.float64), grouped)]:  # groups are never swapped
        want = m(x)
        with convs_as_matmuls(m):
            assert torch.equal(m(x), want)
    assert "forward" not in conv.__dict__ and "forward" not in grouped.__dict__


def test_a_weight_used_outside_its_layer_keeps_its_whole_gradient():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)

    def loss():
        return conv(x).sum() + (conv.weight ** 2).sum()  # a second use of the weight

    want = torch.autograd.grad(loss(), conv.weight)[0]
    with convs_as_matmuls(conv):
        got = torch.autograd.grad(loss(), conv.weight)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_batch_norm_after_the_matrix_path_gets_the_right_gradients():
    # a transposed (channels-last) output made torch's eval batch-norm backward wrong on the CPU
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False)).double().eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2)
        model[1].running_var.uniform_(0.5, 2)
    x = torch.ones(1, 8, 4, 4, dtype=torch.float64)
    r = torch.rand(1, 8, 4, 4, dtype=torch.float64)
    params = [model[0].weight, model[1].weight, model[2].weight]
    want = torch.autograd.grad((model(x) * r).sum(), params)
    with convs_as_matmuls(model):
        got = torch.autograd.grad((model(x) * r).sum(), params)
    for a, b in zip(want, got):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
