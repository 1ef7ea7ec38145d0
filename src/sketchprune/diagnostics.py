"""What theory says about a mask at initialization, before any training (issue 14's mask diagnostics).

* ``min_layer_density``: the smallest kept fraction of any layer (0 = layer collapse);
* ``connected``: no layer collapsed and at least one input-to-output path survives;
* ``log10_paths``: log10 of the number of input-to-output paths through kept weights (the
  network's output on an all-ones input, or all-ones at a token model's embedding output, with
  every kept weight one, every other parameter at its absolute value and the biases zero, in eval
  mode: a path count for Linear layers, and a count weighted by the kernel positions' overlap for
  convolutions; attention and norms make it a flow, not a count);
* ``log10_flow``: log10 of SynFlow's ``R`` of the masked network, the same with the kept weights
  at ``|theta|`` instead of one (the "synaptic flow" the mask lets through).

Both are computed in float64; a count beyond float64's range is reported as None.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sketchprune.methods.context import make_absolute, synaptic_flow


def mask_diagnostics(model: nn.Module, masks: Mapping[str, Tensor], input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The diagnostics of ``masks`` on ``model`` (left as it was)."""
    counts = {n: (int(m.sum()), m.numel()) for n, m in masks.items()}
    min_density = min(k / t for k, t in counts.values()) if counts else 0.0
    paths = _log10_output(model, masks, input_shape, unit=True)
    flow = _log10_output(model, masks, input_shape, unit=False)
    return {"min_layer_density": min_density,
            "connected": min_density > 0 and paths is not None and paths > -math.inf,
            "log10_paths": paths if paths is None or paths > -math.inf else None,
            "log10_flow": flow if flow is None or flow > -math.inf else None}


@torch.no_grad()
def _log10_output(model: nn.Module, masks: Mapping[str, Tensor], input_shape: tuple[int, ...], unit: bool
                  ) -> float | None:
    net = make_absolute(copy.deepcopy(model).double().eval())
    for name, p in net.named_parameters():
        if name in masks:
            keep = masks[name].to(p.device, torch.float64)
            p.copy_(keep if unit else p * keep)
        elif name.endswith("bias"):
            p.zero_()
    from sketchprune.pruning.state import math_attention

    with math_attention():  # a token model's ones enter after its embedding (synaptic_flow)
        R = float(synaptic_flow(net, input_shape))
    if not math.isfinite(R):
        return None
    return math.log10(R) if R > 0 else -math.inf
