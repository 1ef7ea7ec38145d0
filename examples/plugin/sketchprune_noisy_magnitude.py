"""A sketchprune plugin: one method (``noisy_magnitude``) with one option (``noisy_magnitude_sigma``).

Once this package is installed, ``prune(model, "noisy_magnitude", 0.1, noisy_magnitude_sigma=1.0)``,
``sketchprune train --method noisy_magnitude --noisy-magnitude-sigma 1.0`` and a sweep axis
``noisy_magnitude_sigma: [0.5, 1.0]`` all work like a built-in method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sketchprune.config import setting
from sketchprune.methods import Context, Scores, register


@dataclass(frozen=True)
class NoisyMagnitudeOptions:
    noisy_magnitude_sigma: float = setting(0.5, "Standard deviation of the log-normal noise (0 = magnitude).")


@register("noisy_magnitude", options=NoisyMagnitudeOptions,
          description="Noisy magnitude (plugin example): `|theta| * exp(sigma * N(0, 1))`")
def noisy_magnitude(ctx: Context) -> Scores:
    """``|theta|`` times log-normal noise drawn from the call's generator (same seed, same mask)."""
    sigma = ctx.options.noisy_magnitude_sigma
    return {n: p.detach().abs() * torch.exp(sigma * torch.randn(p.shape, generator=ctx.generator)).to(p.device)
            for n, p in ctx.params.items()}
