"""prune(): scorers against independent computations, conservation, counts, sanity checks, errors."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from sketchprune import SketchpruneError, methods, models, prune, topk
from sketchprune.pruning import erk_densities, prunable_parameters


def tiny_mlp(bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16, bias=bias), nn.ReLU(), nn.Linear(16, 8, bias=bias),
                         nn.ReLU(), nn.Linear(8, 3, bias=bias))


def batch(seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g))]


def score(method, model, data=None, input_shape=None, **options):
    """One round of a registered method's scores on ``model`` itself."""
    spec = methods.get(method)
    ctx = methods.Context(spec, model, prunable_parameters(model), spec.make_options(options),
                          torch.Generator().manual_seed(0), data, input_shape)
    return spec.fn(ctx)


def test_synflow_conservation_every_layer_sums_to_R():
    model = tiny_mlp(bias=False).double()
    scores = score("synflow", model, input_shape=(12,))
    sums = [float(s.sum()) for s in scores.values()]
    assert max(sums) == pytest.approx(min(sums), rel=1e-10)
    # and R itself, computed independently with |W| products
    Ws = [m.weight.detach().abs().double() for m in tiny_mlp(bias=False) if isinstance(m, nn.Linear)]
    R = torch.ones(1, 3).double() @ Ws[2] @ Ws[1] @ Ws[0] @ torch.ones(12, 1).double()
    raw = {n: s * 1 for n, s in scores.items()}  # normalised by the max score: ratios are what count
    ratio = float(R) / sums[0]
    assert all(float(s.sum()) * ratio == pytest.approx(float(R), rel=1e-10) for s in raw.values())


def test_synflow_closed_form_on_deep_linear():
    model = models.create("deep-linear", input_shape=(6,), width=5, depth=3, num_classes=4).double()
    scores = score("synflow", model, input_shape=(6,))
    W = [m.weight.detach().abs() for m in model if isinstance(m, nn.Linear)]
    after = torch.ones(1, 4).double() @ W[2]           # 1^T |W3|
    before = W[0] @ torch.ones(6, 1).double()          # |W1| 1
    closed = W[1] * after.T * before.T                 # |W2[j,k]| (1^T|W3|)_j (|W1|1)_k
    got = scores["1.weight"]
    assert torch.allclose(got / got.max(), closed / closed.max(), rtol=1e-10)


def _functional_loss(model, params, x, y, T=1.0):
    return F.cross_entropy(functional_call(model, params, (x,)) / T, y, reduction="sum")


def test_snip_equals_independent_autograd():
    model = tiny_mlp()
    data = batch()
    scores = score("snip", model, data)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = grad(lambda p: _functional_loss(model, p, *data[0]))(params)
    for n, s in scores.items():
        assert torch.allclose(s, (params[n] * g[n]).abs(), atol=1e-6)


def test_grasp_equals_forward_over_reverse_hvp():
    model = tiny_mlp().double()
    data = [(x.double(), y) for x, y in batch()]
    scores = score("grasp", model, data, grasp_temperature=2.0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(prunable_parameters(model))

    def loss_grad(p):
        return grad(lambda q: _functional_loss(model, q, *data[0], T=2.0))(p)

    g = loss_grad(params)
    tangent = {k: (g[k] if k in names else torch.zeros_like(v)) for k, v in params.items()}
    _, hg = jvp(loss_grad, (params,), (tangent,))
    for n in names:
        assert torch.allclose(scores[n], params[n] * hg[n], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("split", [{"grasp_chunk": 7}, {"batches": 3}])
def test_grasp_over_batches_or_micro_batches_equals_one_batch(split):
    model = tiny_mlp().double()
    x, y = batch(n=20)[0]
    whole = score("grasp", model, [(x.double(), y)], grasp_temperature=2.0)
    if "batches" in split:
        data = list(zip(x.double().split(7), y.split(7)))
        parts = score("grasp", model, data, grasp_temperature=2.0)
    else:
        parts = score("grasp", model, [(x.double(), y)], grasp_temperature=2.0, **split)
    for n in whole:
        assert torch.allclose(parts[n], whole[n], rtol=1e-9, atol=1e-12)
    assert any(float(s.abs().max()) > 0 for s in whole.values())


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("mode", ["topk", "sample"])
def test_exact_kept_counts(scope, mode):
    model = tiny_mlp()
    masks = prune(model, "magnitude", 0.3, mode=mode, scope=scope)
    counts = masks.counts()
    if scope == "global":
        assert sum(k for k, _ in counts.values()) == round(0.3 * sum(t for _, t in counts.values()))
    else:
        assert all(k == max(1, round(0.3 * t)) for k, t in counts.values())


def test_iterative_synflow_counts_and_no_regrowth():
    model = tiny_mlp()
    masks = prune(model, "synflow", 0.05, iterations=10, input_shape=(12,))
    total = sum(t for _, t in masks.counts().values())
    assert sum(k for k, _ in masks.counts().values()) == round(0.05 * total)
    assert masks.meta["round_densities"][-1] == pytest.approx(0.05)


def test_shuffle_keeps_per_layer_counts():
    model = tiny_mlp()
    a = prune(model, "magnitude", 0.2)
    b = prune(model, "magnitude", 0.2, shuffle=True)
    assert a.counts() == b.counts()
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_invert_with_zero_scores_has_no_nan():
    model = tiny_mlp()
    with torch.no_grad():
        model[1].weight[:, :6] = 0
    for mode in ("topk", "sample"):
        m = prune(model, "magnitude", 0.5, mode=mode, invert=True)
        assert m.density() == pytest.approx(round(0.5 * 12 * 16 + 0.5 * 128 + 0.5 * 24) / (192 + 128 + 24), abs=1e-2)
    m = prune(model, "magnitude", 0.1, invert=True)
    kept = model[1].weight.detach()[m["1.weight"]]
    assert bool((kept == 0).all())  # the lowest scores are the zeros


def test_same_seed_same_mask():
    model = tiny_mlp()
    a = prune(model, "snip", 0.1, mode="sample", data=batch(), seed=3)
    b = prune(model, "snip", 0.1, mode="sample", data=batch(), seed=3)
    c = prune(model, "snip", 0.1, mode="sample", data=batch(), seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a) and any(not torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow", "ntk", "sketch", "iterative_snip"])
def test_model_is_unchanged(method, train_mode):
    model = models.create("conv", input_shape=(3, 8, 8), width=4)
    model.train()
    model[1].eval()  # a mixed-mode model: each module's mode must come back
    model[0].weight.requires_grad_(False)
    model[1].weight.grad = torch.ones_like(model[1].weight)  # a gradient the caller holds
    held = model[1].weight.grad
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    data = [(torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,)))]
    prune(model, method, 0.2, data=data, iterations=2 if method in ("synflow", "iterative_snip") else None,
          mode="sample", train_mode=train_mode, **({"grasp_temperature": 1.0} if method == "grasp" else {}))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model[1].weight.grad is held and torch.equal(held, torch.ones_like(held))
    assert sum(p.grad is not None for p in model.parameters()) == 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_model_is_restored_when_scoring_fails():
    model = models.create("conv", input_shape=(3, 8, 8), width=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bad = [(torch.randn(6, 3, 8, 8), torch.full((6,), 99))]  # labels out of range: cross_entropy raises
    with pytest.raises(SketchpruneError, match="failed.*IndexError"):
        prune(model, "snip", 0.2, data=bad, train_mode=True)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def reference_synflow(model, density, rounds, input_shape):
    """Iterative SynFlow written the plain way: float64 autograd, full masks, stable global sort."""
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
            t.abs_()
    params = prunable_parameters(m)
    orig = {n: p.detach().clone() for n, p in params.items()}
    masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}
    total = sum(p.numel() for p in params.values())
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(orig[n] * masks[n])
        m.zero_grad()
        m(torch.ones(1, *input_shape, dtype=torch.float64)).sum().backward()
        flat = torch.cat([(p.grad * p).abs().masked_fill(~masks[n], -math.inf).reshape(-1)
                          for n, p in params.items()])
        keep = torch.zeros(total, dtype=torch.bool)
        keep[torch.sort(flat, descending=True, stable=True).indices[: round(density ** (r / rounds) * total)]] = True
        masks = dict(zip(params, (k.view(p.shape) for k, p in zip(keep.split([p.numel() for p in params.values()]),
                                                                   params.values()))))
    return masks


@pytest.mark.parametrize("name", ["vgg11_bn", "resnet20"])
def test_iterative_synflow_equals_the_plain_computation(name, monkeypatch):
    monkeypatch.setattr(topk, "FINISH_LIMIT", 512)  # small sets take the sample-bracket select too
    torch.manual_seed(0)
    model = models.create(name, width=0.25 if name.startswith("vgg") else 4)
    got = prune(model, "synflow", 0.02, iterations=12, input_shape=(3, 32, 32))
    want = reference_synflow(model, 0.02, 12, (3, 32, 32))
    assert all(torch.equal(got[n], want[n]) for n in want)


class TiedHead(nn.Module):
    """Uses its first layer's weight again outside that layer (a weight with two uses)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 3, bias=False)

    def forward(self, x):
        return self.b(self.a(x) @ self.a.weight)


def test_synflow_on_a_model_that_reuses_a_weight():
    torch.manual_seed(0)
    model = TiedHead()
    got = prune(model, "synflow", 0.3, iterations=4, input_shape=(6,))
    assert all(torch.equal(got[n], w) for n, w in reference_synflow(model, 0.3, 4, (6,)).items())


@pytest.mark.parametrize("name", ["vgg16_bn", "resnet20"])
def test_synflow_float32_equals_float64(name):
    torch.manual_seed(0)
    model = models.create(name, width=0.25 if name.startswith("vgg") else 4)
    m32 = prune(model, "synflow", 0.05, iterations=3, input_shape=(3, 32, 32))
    m64 = prune(model.double(), "synflow", 0.05, iterations=3, input_shape=(3, 32, 32))
    assert all(torch.equal(m32[n], m64[n]) for n in m32)


def test_synflow_has_no_inf_on_resnet110_where_float32_overflows():
    torch.manual_seed(0)
    model = models.create("resnet110")
    # the common implementation: float32, |theta|, all-ones input -> R overflows
    naive = models.create("resnet110")
    naive.load_state_dict(model.state_dict())
    naive.eval()
    with torch.no_grad():
        for p in naive.parameters():
            p.abs_()
        assert not bool(torch.isfinite(naive(torch.ones(1, 3, 32, 32)).sum()))
    scores = score("synflow", model, input_shape=(3, 32, 32))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
    masks = prune(model, "synflow", 0.1, iterations=1, input_shape=(3, 32, 32))
    assert masks.density() == pytest.approx(0.1, abs=1e-6)


def test_grasp_sampling_signed_maps():
    model = tiny_mlp()
    for how in ("positive", "rank", "exp", "shift"):
        m = prune(model, "grasp", 0.2, mode="sample", data=batch(), signed_map=how)
        assert m.density() == pytest.approx(round(0.2 * 344) / 344)


def test_erk_densities_hit_the_budget():
    shapes = {"a": (64, 3, 3, 3), "b": (128, 64, 3, 3), "c": (10, 128)}
    d = erk_densities(shapes, 0.1)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert sum(d[n] * sizes[n] for n in shapes) == pytest.approx(0.1 * sum(sizes.values()))
    assert all(0 < v <= 1 for v in d.values()) and d["a"] > d["b"]


def test_layer_collapse_is_reported():
    model = nn.Sequential(nn.Linear(50, 50), nn.Linear(50, 2))
    with torch.no_grad():
        model[1].weight.mul_(1e-6)
    with pytest.warns(UserWarning, match="layer collapse"):
        m = prune(model, "magnitude", 0.1)
    assert m.collapsed() == ["1.weight"] and m.meta["collapsed"] == ["1.weight"]
    with pytest.raises(SketchpruneError, match="layer collapse"):
        prune(model, "magnitude", 0.1, on_collapse="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prune(model, "magnitude", 0.1, scope="layer").collapsed() == []


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"method": "best"}, "unknown method"),
        ({"method": "snip"}, "needs data"),
        ({"method": "grasp"}, "needs data"),
        ({"method": "magnitude", "density": 1e-6}, "fewer than one"),
        ({"method": "synflow", "iterations": 0}, "iterations must be"),
        ({"method": "magnitude", "exclude": ["*"]}, "nothing to prune"),
        ({"method": "magnitude", "colour": 1}, "unknown prune option"),
    ],
)
def test_bad_input(kwargs, msg):
    kwargs.setdefault("density", 0.5)
    with pytest.raises(SketchpruneError, match=msg):
        prune(tiny_mlp(), **kwargs)


def test_unknown_model_lists_names():
    with pytest.raises(SketchpruneError, match="known models: .*resnet20"):
        models.create("resnet7")


def test_random_pruning_is_independent_of_the_init_stream():
    # the model is initialized with torch.manual_seed(s) and pruned with seed=s: the random scores
    # must not replay the draws that made the weights (which would keep the largest weights)
    kept_pos, kept_abs, all_abs = [], [], []
    for s in range(5):
        torch.manual_seed(s)
        model = nn.Sequential(nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
        w = model[0].weight.detach()
        m = prune(model, "random", 0.3, seed=s)["0.weight"]
        kept_pos.append(float((w[m] > 0).float().mean()))
        kept_abs.append(float(w[m].abs().mean()))
        all_abs.append(float(w.abs().mean()))
    # 12,000 kept weights per draw: a fair coin's standard error is ~0.005
    assert abs(sum(kept_pos) / 5 - 0.5) < 0.02
    assert abs(sum(kept_abs) / sum(all_abs) - 1) < 0.02
