"""PX, Path eXclusion (Iurada et al., CVPR 2024): keep the weights that carry the path kernel.

The score of weight ``theta_i`` is ``|dR/d(theta_i^2)| * theta_i^2`` with

    R = sum_x  z1(x) . z2,    z1(x) = f_{mask, a(x)}(x^2),    z2 = f_{theta^2, linear}(1),

where ``f_{theta^2, linear}`` is the network with every Linear/Conv weight squared and the ReLUs
removed, run on all-ones inputs, and ``f_{mask, a(x)}`` the network with the kept weights set to
one, run on the squared data with the ReLU on/off pattern ``a(x)`` of the real network on ``x``:
an upper bound of the NTK trace split over input-to-output paths. Iterative, 100 rounds; a few
samples per class of data.

Checked against iurada/px-ntk-pruning (``lib/pruners.py``, class ``PX``, commit ed6c40e;
``launch_scripts/cifar10.sh``: 100 rounds, exponential schedule, global). Where we depart:

* the reference squares / fills parameters by *name*, skipping names containing ``fc`` or ``bn``:
  on a network whose classifier is called ``fc`` that layer stays unsquared and signed, its
  scores come out ~1e-8 and the global threshold empties it (every layer then ends pruned). We
  select by type: every Linear/Conv weight is squared (path kernel) or set to its mask (path
  activations); normalization layers keep their values (the reference's ``bn`` skip);
* biases are set to zero in both auxiliary networks (the reference squares them / sets them to
  one): a bias starts paths in the middle of the network, and their squares draw the score to
  the last layers; on an MLP with biases (digits) the first four layers collapse by density 0.1
  when they are kept, and none does when they are left out;
* ``examples_per_class`` is required there but set by no script; ours defaults to 10;
* the path-kernel network runs in eval mode (the reference: train mode), so its batch norm is the
  fixed affine map of initialization: in train mode the all-ones batch is normalized by the
  spread of its padding borders, and ResNet-20 and VGG-16-BN then lose whole stages (and the
  classifier) by density 0.01; with it in eval mode VGG-16-BN keeps every layer. It runs in
  float64 on one all-ones input (not a batch of identical ones). The path-activation network
  runs in train mode as the reference's, in float32, or float64 where float32 overflows (the
  one-valued weights grow by the fan-in per layer without batch norm). On ResNet-20 at density
  0.01 PX still empties the residual branches of the later blocks, the shortcuts keeping the
  network connected: removing a branch weight shrinks the path count of the whole branch;
* ReLUs are the calls of ``torch.nn.functional.relu`` / ``leaky_relu``: those of ``nn.ReLU`` /
  ``nn.LeakyReLU`` modules and those a custom ``forward`` makes, as the reference finds them.
  Other nonlinearities (``torch.relu``, ``Tensor.relu``, GELU, ...) are left as they are. The
  reference replaces the two functions in ``torch.nn.functional`` for the whole process; here they
  stay as they are and a torch function mode (:class:`torch.overrides.TorchFunctionMode`, local to
  the calling thread) intercepts the calls that px's own forwards make, so another thread (or
  another model run meanwhile in another thread) sees the usual ReLUs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from sketchprune.config import setting
from sketchprune.layers import ATTENTION_LAYERS, WEIGHT_LAYERS, token_embedding, weight_name
from sketchprune.errors import check
from sketchprune.methods._conv_as_matmul import convs_as_matmuls
from sketchprune.methods.context import Context, Scores
from sketchprune.methods.registry import register



@dataclass(frozen=True)
class PxOptions:
    px_examples_per_class: int = setting(10, "Samples per class of the data used (a balanced subset).")

    def validate(self) -> None:
        check(self.px_examples_per_class >= 1, f"px_examples_per_class must be >= 1, got {self.px_examples_per_class}")


@register("px", options=PxOptions, data="required", rounds=100,
          description="PX (Iurada et al., CVPR 2024): path-kernel upper bound of the NTK trace, squared weights "
                      "on all-ones input with the ReLU patterns of the real network on the data")
def px(ctx: Context) -> Scores:
    """``|dR/d(theta^2)| * theta^2`` (see the module docstring), on the current masked network."""
    st = ctx.memo
    if "path_kernel" not in st:
        _check_path_network(ctx.model)
        st["path_kernel"] = copy.deepcopy(ctx.model).double()  # squared weights: float64 keeps deep nets finite
        st["path_activations"] = copy.deepcopy(ctx.model)
        st["x"] = balanced_inputs(ctx.batches(), ctx.options.px_examples_per_class)
    kernel, activations, x = st["path_kernel"], st["path_activations"], st["x"]
    masks = ctx.current_masks()
    params = [_layer(kernel, n).weight for n in ctx.params]
    with torch.no_grad():  # refresh both copies from the current (masked) model
        for (name, real), (_, k), (_, a) in zip(_named_layers(ctx.model), _named_layers(kernel),
                                                _named_layers(activations)):
            k.weight.copy_(real.weight.detach() ** 2)
            w_name = weight_name(name)
            a.weight.copy_(masks[w_name].to(a.weight.dtype) if w_name in masks else torch.ones_like(a.weight))
            if real.bias is not None:  # paths start at the input: biases are left out of both
                k.bias.zero_()
                a.bias.zero_()
    kernel.eval()
    activations.train()  # as the reference: batch norm normalizes the path activations over the data
    ctx.model.eval()
    with torch.no_grad():
        patterns: list[Tensor] = []
        with _ReluPatterns("record", patterns):
            ctx.model(x)
        while True:  # the one-valued network grows by the fan-in per layer: float64 when float32 overflows
            dtype = next(activations.parameters()).dtype
            with _ReluPatterns("replay", list(patterns)):
                z1 = activations(x.to(dtype).pow(2)).double()
            if bool(torch.isfinite(z1).all()) or dtype == torch.float64:
                break
            activations.double()
    # every input of the path-kernel network is the same all-ones input (and batch norm runs in eval
    # mode), so one forward of one input serves the whole batch: R = (sum_x z1(x)) . z2
    with _ReluPatterns("linear"), convs_as_matmuls(kernel):
        z2 = kernel(torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device))
    R = (z1.sum(0, keepdim=True) * z2).sum()
    check(bool(torch.isfinite(R)), "px's path kernel overflowed even in float64; the model is too deep for px")
    grads = torch.autograd.grad(R, params, allow_unused=True)
    return {n: (g.abs() if g is not None else torch.zeros_like(p)) * p.detach()  # float64: beyond float32's range
            for n, g, p in zip(ctx.params, grads, params)}


def balanced_inputs(batches: list[tuple[Tensor, Tensor]], per_class: int) -> Tensor:
    """The first ``per_class`` inputs of every class in the batches (fewer where a class has fewer);
    with regression targets (float, no classes) every input given."""
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    if y.is_floating_point():
        return x
    keep = torch.cat([torch.nonzero(y == c).squeeze(1)[:per_class] for c in torch.unique(y)])
    return x[keep.sort().values]


def _check_path_network(model: nn.Module) -> None:
    """px's path kernel is that of a ReLU network fed features: refuse attention and token inputs."""
    attention = next((f"{n} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, ATTENTION_LAYERS)),
                     None)
    check(attention is None, f"px's path kernel splits a ReLU network of Linear/Conv layers into input-to-output "
                             f"paths; attention ({attention}) multiplies activations by each other (softmax of "
                             "products) and has no such paths: use another method")
    check(token_embedding(model) is None, "px feeds the squared inputs through the network; a token model's inputs are "
                                          "indices of an Embedding, with nothing to square: use another method")


def _named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def _layer(model: nn.Module, param_name: str) -> nn.Module:
    module, _, attr = param_name.rpartition(".")
    check(attr == "weight", f"px scores Linear/Conv weights; {param_name} is not one (drop include_bias / include=)")
    layer = model.get_submodule(module)
    check(isinstance(layer, WEIGHT_LAYERS), f"px scores Linear/Conv weights; {param_name} belongs to a "
                                     f"{type(layer).__name__} (drop include_norm / include=)")
    return layer


_RELUS = (F.relu, F.leaky_relu)


class _ReluPatterns(TorchFunctionMode):
    """Within the block, on this thread only, the calls of ``F.relu`` and ``F.leaky_relu`` (which
    ``nn.ReLU`` / ``nn.LeakyReLU`` make) ``record`` their on/off pattern into ``patterns``,
    ``replay`` it (multiply by the recorded pattern, in call order), or act ``linear`` (the
    identity). Every other function runs as usual; ``torch.nn.functional`` is never changed."""

    def __init__(self, how: str, patterns: list[Tensor] | None = None) -> None:
        super().__init__()
        self.how, self.patterns = how, patterns

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _RELUS:
            return func(*args, **kwargs)
        t = args[0]
        if self.how == "record":
            self.patterns.append(t > 0)  # type: ignore[union-attr]
            return func(*args, **kwargs)
        if self.how == "replay":
            return t * self.patterns.pop(0).to(t.dtype)  # type: ignore[union-attr]
        return t
