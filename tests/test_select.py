"""select() (selection.py, topk.py): exact counts, tie and zero rules, sampling laws, determinism, scale."""

import math
import platform
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sketchprune import SketchpruneError, pieces, prune, select, topk
from sketchprune.inclusion import inclusion_probabilities


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@settings(max_examples=80, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    density=st.floats(0.01, 1.0),
    levels=st.integers(1, 5),  # few distinct values -> many ties
    mode=st.sampled_from(["topk", "exact", "iid"]),
    scope=st.sampled_from(["global", "layer"]),
    seed=st.integers(0, 2**16),
)
def test_exact_counts_with_ties(sizes, density, levels, mode, scope, seed):
    gen = g(seed)
    scores = {f"t{i}": torch.randint(0, levels, (n,), generator=gen).float() for i, n in enumerate(sizes)}
    groups = [list(scores)] if scope == "global" else [[n] for n in scores]
    if any(round(density * sum(scores[n].numel() for n in grp)) < 1 for grp in groups):
        with pytest.raises(SketchpruneError, match="raise the density"):
            select(scores, density, scope=scope)
        return
    kw = {} if mode == "topk" else {"mode": "sample", "scheme": mode, "generator": gen}
    masks = select(scores, density, scope=scope, **kw)
    for grp in groups:
        total = sum(scores[n].numel() for n in grp)
        assert sum(int(masks[n].sum()) for n in grp) == round(density * total)
    if mode == "topk" and scope == "global":
        kept = torch.cat([scores[n][masks[n]] for n in scores])
        dropped = torch.cat([scores[n][~masks[n]] for n in scores])
        if dropped.numel() and kept.numel():
            assert float(kept.min()) >= float(dropped.max())


def test_topk_tie_keeps_lowest_indices_first():
    s = torch.tensor([5.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    assert select(s, 3 / 6).tolist() == [True, True, True, False, False, False]
    masks = select({"a": torch.ones(3), "b": torch.ones(3)}, 4 / 6)
    assert masks["a"].all() and masks["b"].tolist() == [True, False, False]


def test_negative_scores_rank_in_topk():
    s = torch.tensor([-3.0, -1.0, -2.0, 0.5])
    assert select(s, 0.5).tolist() == [False, True, False, True]


def test_same_seed_same_mask_and_seeds_differ():
    s = torch.rand(5000, generator=g(1))
    for scheme in ("exact", "poisson", "iid"):
        a = select(s, 0.1, mode="sample", scheme=scheme, generator=g(42))
        b = select(s, 0.1, mode="sample", scheme=scheme, generator=g(42))
        c = select(s, 0.1, mode="sample", scheme=scheme, generator=g(43))
        assert torch.equal(a, b) and not torch.equal(a, c)


def _freq(scores, density, trials, **kw):
    gen = g(5)
    acc = torch.zeros_like(scores)
    for _ in range(trials):
        acc += select(scores, density, mode="sample", generator=gen, **kw).float()
    return acc / trials


def _ppswor_inclusion_k2(w):
    """Exact inclusion probabilities of successive sampling of 2 items proportional to w."""
    W = float(w.sum())
    out = []
    for i in range(len(w)):
        p = float(w[i]) / W
        p += sum(float(w[j]) / W * float(w[i]) / (W - float(w[j])) for j in range(len(w)) if j != i)
        out.append(p)
    return torch.tensor(out)


@pytest.mark.parametrize("scheme", ["exact", "iid"])
def test_exact_and_iid_follow_successive_sampling_law(scheme):
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    trials = 6000
    f = _freq(w, 0.5, trials, scheme=scheme)
    p = _ppswor_inclusion_k2(w)
    se = (p * (1 - p) / trials).sqrt()
    assert bool(((f - p).abs() <= 4 * se).all()), (f, p)


def test_iid_masks_are_drawn_on_the_successive_sampling_path(net):
    """Drawing with replacement until k distinct has the law of successive sampling (that law is
    tested above), so iid masks are computed on the exact path, draw for draw: this pins
    that implementation choice (iterative SynFlow with iid used to draw ever more as k neared n)."""
    model = net()
    a = prune(model, "synflow", 0.05, iterations=10, mode="sample", scheme="iid")
    b = prune(model, "synflow", 0.05, iterations=10, mode="sample", scheme="exact")
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_poisson_inclusion_frequencies_and_mean_count():
    w = torch.tensor([0.1, 1.0, 2.0, 3.0, 10.0, 0.5])
    trials = 6000
    f = _freq(w, 0.5, trials, scheme="poisson")
    pi = inclusion_probabilities([w.double()], 3)(w.double()).float()
    se = (pi * (1 - pi) / trials).sqrt() + 1e-6
    assert float(pi.sum()) == pytest.approx(3.0)
    assert bool(((f - pi).abs() <= 4 * se).all()), (f, pi)


def test_power_zero_is_uniform_and_power_inf_is_topk():
    s = torch.tensor([1e-6, 1.0, 1e3, 0.0, 5.0, 2.0])
    trials = 4000
    f = _freq(s, 0.5, trials, scheme="exact", power=0.0)
    assert bool(((f - 0.5).abs() <= 4 * math.sqrt(0.25 / trials)).all())
    assert torch.equal(select(s, 0.5, mode="sample", power=math.inf, generator=g()), select(s, 0.5))


def test_zero_scores_rule():
    s = torch.tensor([0.0, 3.0, 0.0, 1e-30, 0.0, 0.0, 2.0, 0.0])
    for scheme in ("exact", "iid", "poisson"):
        for seed in range(20):
            m = select(s, 3 / 8, mode="sample", scheme=scheme, generator=g(seed))
            assert not bool(m[s == 0].any()), scheme  # positives remain: zeros never kept
    f = _freq(s, 5 / 8, 3000, scheme="exact")
    assert bool((f[s > 0] == 1).all())  # every positive kept, 2 of the 5 zeros at random
    assert bool(((f[s == 0] - 0.4).abs() < 0.05).all())


def test_extreme_range_and_log_scores_agree():
    s = torch.tensor([1e-300, 1e300, 1e-10, 1.0, 1e100, 0.0], dtype=torch.float64)
    for seed in range(10):
        m = select(s, 0.5, mode="sample", generator=g(seed))
        assert m[1] and m[4] and not m[5]  # 1e300 and 1e100 dominate all other weights
        m_log = select(s.log(), 0.5, mode="sample", generator=g(seed), log_scores=True)
        assert torch.equal(m, m_log)
    # log-space scores beyond any float range still sample by weight
    logs = torch.tensor([-5000.0, 5000.0, 0.0, -math.inf])
    assert select(logs, 0.25, mode="sample", log_scores=True, generator=g()).tolist() == [False, True, False, False]


def test_more_than_2_pow_24_elements():
    n = (1 << 24) + 1
    s = torch.rand(n, generator=g(9))
    k = round(0.01 * n)
    top = select(s, 0.01)
    assert int(top.sum()) == k and float(s[top].min()) >= float(s[~top].max())
    samp = select(s, 0.01, mode="sample", generator=g(1))
    assert int(samp.sum()) == k


def test_chunked_recompute_equals_cached(monkeypatch):
    s = {"a": torch.rand(2500, generator=g(2)), "b": torch.rand(700, generator=g(3))}
    monkeypatch.setattr(pieces, "PIECE", 256)
    by_sort = [select(s, 0.2)] + [select(s, 0.2, mode="sample", scheme=sc, generator=g(1)) for sc in ("exact", "iid")]
    monkeypatch.setattr(topk, "FINISH_LIMIT", 0)  # sample-bracket select
    bracket = [select(s, 0.2)] + [select(s, 0.2, mode="sample", scheme=sc, generator=g(1)) for sc in ("exact", "iid")]
    monkeypatch.setattr(topk, "BRACKET", False)  # radix select from here on
    merged = [select(s, 0.2)] + [select(s, 0.2, mode="sample", scheme=sc, generator=g(1)) for sc in ("exact", "iid")]
    monkeypatch.setattr(topk, "MERGE_LIMIT", 0)  # and over separate pieces
    cached = [select(s, 0.2)] + [select(s, 0.2, mode="sample", scheme=sc, generator=g(1)) for sc in ("exact", "iid")]
    monkeypatch.setattr(topk, "CACHE_LIMIT", 0)
    fresh = [select(s, 0.2)] + [select(s, 0.2, mode="sample", scheme=sc, generator=g(1)) for sc in ("exact", "iid")]
    for a, b, c, d, e in zip(cached, fresh, by_sort, merged, bracket):
        assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) and torch.equal(a[n], d[n])
                   and torch.equal(a[n], e[n]) for n in s)


def test_select_leaves_the_allocator_alone(monkeypatch):
    """No C library call from select, even on the recompute path of huge sets (pinning glibc's mmap
    threshold is the application's opt-in: topk.pin_mmap_threshold)."""
    import ctypes

    calls = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(topk, "CACHE_LIMIT", 0)
    monkeypatch.setattr(topk, "BRACKET", False)
    monkeypatch.setattr(topk, "FINISH_LIMIT", 0)
    s = torch.rand(5000, generator=g(4))
    assert int(select(s, 0.1).sum()) == 500 and calls == []


def test_pin_mmap_threshold_is_applied_where_asked():
    code = "import sys; from sketchprune import topk; sys.exit(0 if topk.pin_mmap_threshold() else 3)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    glibc = platform.libc_ver()[0] == "glibc"
    assert r.returncode == (0 if glibc else 3), r.stderr


@settings(max_examples=40, deadline=None)
@given(vals=st.lists(st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, -7.0, 1e-40, float("-inf")]), min_size=2, max_size=80),
       frac=st.floats(0.05, 1.0), f64=st.booleans())
def test_radix_select_equals_stable_sort(vals, frac, f64):
    x = torch.tensor(vals, dtype=torch.float64 if f64 else torch.float32)
    k = max(1, round(frac * len(vals)))
    outs_sort = [torch.zeros(len(vals), dtype=torch.bool)]
    topk.largest_k([len(vals)], lambda j: x, k, outs_sort)
    old = topk.FINISH_LIMIT, topk.BRACKET
    topk.FINISH_LIMIT = 0
    try:
        outs_bracket = [torch.zeros(len(vals), dtype=torch.bool)]
        topk.largest_k([len(vals)], lambda j: x, k, outs_bracket)
        topk.BRACKET = False
        outs_radix = [torch.zeros(len(vals), dtype=torch.bool)]
        topk.largest_k([len(vals)], lambda j: x, k, outs_radix)
    finally:
        topk.FINISH_LIMIT, topk.BRACKET = old
    stable = torch.zeros(len(vals), dtype=torch.bool)  # the rule itself: a stable descending sort
    stable[torch.sort(x, descending=True, stable=True).indices[:k]] = True
    assert torch.equal(outs_sort[0], stable) and int(outs_sort[0].sum()) == k
    assert torch.equal(outs_sort[0], outs_radix[0]) and torch.equal(outs_sort[0], outs_bracket[0])


def test_per_layer_density_mapping():
    s = {"a": torch.rand(100, generator=g()), "b": torch.rand(50, generator=g(1))}
    m = select(s, {"a": 0.1, "b": 0.5}, scope="layer")
    assert int(m["a"].sum()) == 10 and int(m["b"].sum()) == 25


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"density": 0.0}, "density must be in"),
        ({"density": 1.5}, "density must be in"),
        ({"density": 0.5, "mode": "best"}, "unknown mode"),
        ({"density": 0.5, "mode": "sample", "scheme": "fancy"}, "unknown scheme"),
        ({"density": 0.5, "scope": "world"}, "unknown scope"),
        ({"density": 0.5, "scheme": "poisson"}, "only apply to mode='sample'"),
        ({"density": 0.5, "mode": "sample", "power": -1.0}, "power must be"),
        ({"density": {"x": 0.5}}, "scope='layer'"),
    ],
)
def test_bad_arguments(kwargs, msg):
    density = kwargs.pop("density")
    with pytest.raises(SketchpruneError, match=msg):
        select({"x": torch.rand(10)}, density, **kwargs)


@pytest.mark.parametrize(
    "scores, kwargs, msg",
    [
        (torch.tensor([1.0, float("nan")]), {}, "NaN"),
        (torch.tensor([1.0, float("inf")]), {}, "inf"),
        (torch.tensor([1.0, -1.0]), {"mode": "sample"}, "negative"),
        (torch.tensor([]), {}, "empty"),
        ({}, {}, "empty"),
        (torch.tensor([1, 2]), {}, "float tensor"),
    ],
)
def test_bad_scores(scores, kwargs, msg):
    with pytest.raises(SketchpruneError, match=msg) as e:
        select(scores, 0.5, **kwargs)
    assert "\n" not in str(e.value)
