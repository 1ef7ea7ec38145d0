"""SNIP and its iterative form: connection sensitivity ``|theta * dL/dtheta|`` on a data batch."""

from __future__ import annotations

from sketchprune.methods.registry import Context, Scores, register


@register("snip", data="required",
          description="SNIP (Lee et al., ICLR 2019): `|theta * dL/dtheta|`, cross-entropy summed over the batches")
def snip(ctx: Context) -> Scores:
    """``|theta * dL/dtheta|`` with L the cross-entropy summed over the given batches."""
    grads = ctx.loss_grads()
    return {n: grads[n].mul_(p.detach()).abs_() for n, p in ctx.params.items()}


register("iterative_snip", data="required", rounds=10,
         description="Iterative SNIP (de Jorge et al., ICLR 2021): SNIP re-scored on the surviving network "
                     "every round, pruned weights stay pruned")(snip)
