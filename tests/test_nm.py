"""N:M sparsity (nm.py): at most n of every m kept, the largest of each group, on a pruned model."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sketchprune import prune
from sketchprune.nm import nm_mask, project_nm


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
