"""Smart-Ratio (methods/smart_ratio.py): per-layer counts by hand, exact random masks, no sampled form."""

import pytest
import torch

from sketchprune import SketchpruneError, models, prune
from sketchprune.methods.smart_ratio import layer_counts


def test_smart_ratio_counts_by_hand():
    # L = 3: raw ratios (L-l+1)^2 + (L-l+1) = 12, 6 for the first two; classifier 0.3 * 50 = 15;
    # rest 45 = c (12 * 100 + 6 * 200) -> c = 0.01875 -> 22.5 and 22.5, the tie rounded up at the front
    assert layer_counts([100, 200, 50], 60, 0.3) == [23, 22, 15]
    # a layer whose ratio would exceed 1 is made dense and the others re-scaled
    assert layer_counts([10, 1000, 10], 500, 0.3) == [10, 487, 3]
    # 0.3 of the classifier exceeds a tiny budget: one weight per other layer, the rest to it
    assert layer_counts([100, 100, 100], 12, 0.3) == [1, 1, 10]
    assert layer_counts([64], 7, 0.3) == [7]  # one layer: the budget
    assert layer_counts([10, 10, 100], 110, 0.3) == [10, 10, 90]  # dense others; the classifier takes the rest


def test_smart_ratio_masks_exact_random_and_refusing_sampling():
    torch.manual_seed(0)
    net = models.create("mlp", input_shape=(64,), width=100, depth=5)
    a, b, c = (prune(net, "smart_ratio", 0.01, seed=s) for s in (0, 0, 1))
    sizes = [p.numel() for n, p in net.named_parameters() if n.endswith("weight")]
    assert [k for k, _ in a.counts().values()] == layer_counts(sizes, round(0.01 * sum(sizes)), 0.3)
    assert all(torch.equal(a[n], b[n]) for n in a) and any(not torch.equal(a[n], c[n]) for n in a)
    ratios = [d for d in a.layer_density().values()]
    assert ratios[-1] == pytest.approx(0.3) and all(x >= y for x, y in zip(ratios[:-2], ratios[1:-1]))
    with pytest.raises(SketchpruneError, match="no sampled form"):
        prune(net, "smart_ratio", 0.1, mode="sample")
    with pytest.raises(SketchpruneError, match="own per-layer budgets"):
        prune(net, "smart_ratio", 0.1, scope="layer")
