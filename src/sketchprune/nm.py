"""N:M sparsity, a constraint on masks: at most N kept of every M consecutive weights.

:func:`nm_mask` / :func:`project_nm` keep at most N of every M consecutive weights along a
layer's input (the reduction dimension), the pattern ``torch.sparse.to_sparse_semi_structured``
accelerates on CUDA (2:4); among a group's kept weights the largest magnitudes stay. A run with
``nm="2:4"`` projects its mask before training (jaxpruner treats N:M as a sparsity type of the
selection; ours projects any method's mask).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sketchprune.errors import check
from sketchprune.masks import Masks


def nm_mask(scores: Tensor, n: int = 2, m: int = 4, keep: Tensor | None = None) -> Tensor:
    """A bool mask keeping at most ``n`` of every ``m`` consecutive entries along the last flattened
    dimension (the input of a Linear / Conv weight): the ``n`` largest ``scores`` among ``keep``."""
    check(1 <= n <= m, f"an N:M pattern needs 1 <= N <= M, got {n}:{m}")
    shape = scores.shape
    flat = scores.reshape(shape[0], -1) if scores.dim() > 1 else scores.reshape(1, -1)
    check(flat.shape[1] % m == 0, f"a layer with {flat.shape[1]} inputs cannot take the {n}:{m} pattern "
                                  f"(its inputs are not a multiple of {m})")
    allowed = keep.reshape(flat.shape) if keep is not None else torch.ones_like(flat, dtype=torch.bool)
    groups = flat.masked_fill(~allowed, float("-inf")).reshape(flat.shape[0], -1, m)
    top = groups.topk(n, dim=2).indices
    out = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, top, True)
    return (out.reshape(flat.shape) & allowed).reshape(shape)


def project_nm(masks: Masks, model: nn.Module, n: int = 2, m: int = 4) -> Masks:
    """``masks`` projected onto the ``n:m`` pattern (largest kept magnitudes of ``model`` first);
    masks made for another model are a one-line error."""
    params = masks._check_model(model)
    out = Masks({name: nm_mask(params[name].detach().abs().cpu(), n, m, keep) for name, keep in masks.items()},
                meta={**masks.meta, "nm": f"{n}:{m}"})
    out.start_state = masks.start_state
    return out
