"""The field's methods (issue 12): each against an independent computation, or the properties that define it."""

import copy
import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sketchprune import SketchpruneError, data, methods, models, prune
from sketchprune.budgets import erk_densities
from sketchprune.experiment import Trainer
from sketchprune.pruning import prunable_parameters, score
from sketchprune.train import TrainConfig

SCORE_METHODS = ["ntk_sap", "px", "prospr", "force", "iterative_snip"]
ROUNDS = {"ntk_sap": 3, "px": 4, "force": 3, "iterative_snip": 3}


def mlp(bias=True, seed=0, widths=(12, 16, 10, 3)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def batches(n=3, size=24, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 12, generator=g), torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


def flat(masks):
    return torch.cat([m.reshape(-1) for m in masks.values()])


# ---- every method: sampling, scopes, exact counts, same seed ---------------------------------------

@pytest.mark.parametrize("method", SCORE_METHODS)
@pytest.mark.parametrize("mode, scope", [("topk", "global"), ("sample", "global"), ("sample", "layer"),
                                         ("topk", "erk")])
def test_score_methods_sample_and_take_any_scope(method, mode, scope):
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = prune(model, method, 0.3, mode=mode, scope=scope, data=batches(), iterations=ROUNDS.get(method))
    counts = m.counts()
    if scope == "global":
        assert sum(k for k, _ in counts.values()) == round(0.3 * sum(t for _, t in counts.values()))
    else:  # every layer keeps exactly its own budget: 0.3 of it, or its Erdos-Renyi-kernel share
        shapes = {n: tuple(t.shape) for n, t in m.items()}
        dens = erk_densities(shapes, 0.3) if scope == "erk" else dict.fromkeys(shapes, 0.3)
        assert {n: k for n, (k, _) in counts.items()} == {n: max(1, round(dens[n] * t)) for n, (_, t) in counts.items()}
        assert len(set(dens.values())) > 1 or scope == "layer"  # erk's densities differ between layers here


@pytest.mark.parametrize("method", SCORE_METHODS + ["phew", "smart_ratio"])
def test_same_seed_same_mask(method):
    model = mlp()
    kw = {"data": batches(), "iterations": ROUNDS.get(method)} if method not in ("phew", "smart_ratio") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = (prune(model, method, 0.2, seed=5, **kw) for _ in range(2))
    assert torch.equal(flat(a), flat(b))


def test_mask_methods_refuse_sampling():
    for method in ("phew", "smart_ratio"):
        with pytest.raises(SketchpruneError, match="no sampled form"):
            prune(mlp(), method, 0.2, mode="sample")


# ---- NTK-SAP: data-free and weight-free ----------------------------------------------------------------

def test_ntk_sap_mask_depends_on_neither_data_nor_weight_values():
    a = prune(mlp(seed=0), "ntk_sap", 0.2, iterations=3, seed=1)
    b = prune(mlp(seed=7), "ntk_sap", 0.2, iterations=3, seed=1)  # other weights
    c = prune(mlp(seed=0), "ntk_sap", 0.2, iterations=3, seed=2)
    assert torch.equal(flat(a), flat(b)) and not torch.equal(flat(a), flat(c))
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    prune(model, "ntk_sap", 0.2, iterations=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # theta_0 kept (the reference
    # re-initializes the caller's model)


def test_ntk_sap_score_is_the_finite_difference_saliency_of_the_kernel():
    # a linear network: J = sum_x ||(m * eps z) x||^2 does not depend on theta, so its mask-gradient
    # is 2 eps^2 sum_x [(m * z) x]_i z_ij x_j on one re-draw; with theta re-drawn the scores of a
    # one-layer net depend on z and x only: check against that formula with the same draws
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4, bias=False))
    g = torch.Generator().manual_seed(123)
    from sketchprune.methods import ntk_sap as module

    scratch = copy.deepcopy(model)
    module.redraw(scratch, g)  # the draws the method makes, in its order
    z = torch.randn((4, 5), generator=g)
    x = torch.randn((7, 5), generator=g)
    eps = 0.01
    want = (2 * eps**2 * ((x @ z.t()).unsqueeze(2) * z.unsqueeze(0) * x.unsqueeze(1)).sum(0)).abs()
    spec = methods.get("ntk_sap")
    ctx = methods.Context(spec, model, prunable_parameters(model),
                          spec.make_options({"ntk_sap_redraws": 1, "ntk_sap_samples": 7}),
                          torch.Generator().manual_seed(123), None, (5,))
    got = spec.fn(ctx)["0.weight"]
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-12)


# ---- PX: the path score written out ---------------------------------------------------------------

def test_px_score_equals_the_path_kernel_formula():
    torch.manual_seed(0)
    model = mlp(bias=True).double()
    x, y = batches(n=1, size=30)[0]
    x = x.double()
    W = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    b = [m.bias.detach() for m in model if isinstance(m, nn.Linear)]
    # ReLU patterns of the real network (with its biases), on x
    h1 = x @ W[0].t() + b[0]
    a1 = (h1 > 0).double()
    h2 = h1.clamp_min(0) @ W[1].t() + b[1]
    a2 = (h2 > 0).double()
    ones = [torch.ones_like(w) for w in W]
    z1 = ((((x**2) @ ones[0].t()) * a1) @ ones[1].t() * a2) @ ones[2].t()  # path activations, weights one
    V = [(w**2).requires_grad_() for w in W]  # squared weights, no biases, no ReLUs
    z2 = torch.ones(1, 12, dtype=torch.float64) @ V[0].t() @ V[1].t() @ V[2].t()
    grads = torch.autograd.grad((z1.sum(0, keepdim=True) * z2).sum(), V)
    want = [g.abs() * v.detach() for g, v in zip(grads, V)]
    got = score(model, "px", data=[(x, y)], px_examples_per_class=100)
    for w_, g_ in zip(want, got.values()):
        assert torch.allclose(g_, w_, rtol=1e-10)


def test_px_keeps_every_layer_of_vgg_where_the_reference_empties_its_classifier():
    torch.manual_seed(0)
    model = models.create("vgg11_bn", width=0.125)
    x = torch.randn(40, 3, 32, 32)
    masks = prune(model, "px", 0.02, data=[(x, torch.arange(40) % 10)], iterations=20)
    assert masks.collapsed() == [] and masks["classifier.weight"].any()


# ---- ProsPr: meta-gradient against finite differences ---------------------------------------------

def test_prospr_meta_gradient_equals_finite_differences():
    torch.manual_seed(0)
    model = mlp(widths=(12, 6, 3)).double()
    x, y = batches(n=1, size=16)[0]
    x = x.double()
    got = score(model, "prospr", data=[(x, y)], prospr_steps=3, prospr_lr=0.2, prospr_momentum=0.5)
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def meta_loss(masks):  # 3 SGD steps (momentum 0.5) on theta * m, written plainly, then the loss
        params = {n: theta[n] * masks[n] if n in masks else theta[n] for n in names}
        velocity = {}
        for _ in range(3):
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
            loss = F.cross_entropy(functional_call(model, params, (x,)), y)
            grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
            new = {}
            for n in names:
                v = grads[n] if n not in velocity else velocity[n] * 0.5 + grads[n]
                velocity[n] = v
                new[n] = params[n] - 0.2 * v
            params = new
        return float(F.cross_entropy(functional_call(model, params, (x,)), y))

    ones = {n: torch.ones_like(theta[n]) for n in got}
    h = 1e-6
    g = torch.Generator().manual_seed(0)
    for n in got:
        for _ in range(4):
            i = int(torch.randint(got[n].numel(), (1,), generator=g))
            plus, minus = copy.deepcopy(ones), copy.deepcopy(ones)
            plus[n].view(-1)[i] += h
            minus[n].view(-1)[i] -= h
            fd = abs(meta_loss(plus) - meta_loss(minus)) / (2 * h)
            assert float(got[n].view(-1)[i]) == pytest.approx(fd, rel=1e-4, abs=1e-9)


# ---- FORCE and Iterative SNIP: the reference algorithm written plainly ---------------------------

def reference_progressive(model, data, density, steps, force, loss):
    """naver/force's iterative_pruning, written plainly: exponential schedule, one batch per step,
    saliency |w g| (Iter-SNIP: the masked network, pruned weights stay pruned) or |w0 g| at the
    sparsified weights (FORCE: every weight), global threshold."""
    net = copy.deepcopy(model)
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    originals = [m.weight.detach().clone() for m in layers]
    masks = [torch.ones_like(w, dtype=torch.bool) for w in originals]
    total = sum(w.numel() for w in originals)
    for step in range(steps):
        keep = round(math.exp(-(step + 1) * math.log(1 / density) / steps) * total)
        with torch.no_grad():
            for m, w0, mask in zip(layers, originals, masks):
                m.weight.copy_(w0 * mask)
        for m in layers:
            m.weight.grad = None
        x, y = data[step % len(data)]
        out = net(x)
        (F.nll_loss(out, y) if loss == "nll_logits" else F.cross_entropy(out, y)).backward()
        sal = []
        for m, w0, mask in zip(layers, originals, masks):
            s = (w0 * m.weight.grad).abs() if force else (m.weight.detach() * m.weight.grad).abs()
            sal.append(s if force else s.masked_fill(~mask, -1.0))
        flat_s = torch.cat([s.reshape(-1) for s in sal])
        threshold = torch.topk(flat_s, keep).values[-1]
        masks = [s >= threshold for s in sal]
    return masks


@pytest.mark.parametrize("method", ["force", "iterative_snip"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_logits"])
def test_progressive_skeletonization_equals_the_reference_algorithm(method, loss):
    model = mlp(bias=True).double()
    data_ = [(x.double(), y) for x, y in batches(n=4, size=32)]
    got = prune(model, method, 0.1, data=data_, **{f"{method}_loss": loss})
    want = reference_progressive(model, data_, 0.1, 10, method == "force", loss)
    assert all(torch.equal(got[n], w) for n, w in zip(got, want))


def test_force_lets_pruned_weights_come_back(scratch_registry):
    """Each round sees the masks the last one chose (``ctx.masks``): FORCE's grow back, Iter-SNIP's only shrink."""
    seen: dict[str, list] = {"force": [], "iterative_snip": []}
    for name in seen:
        inner = methods.get(name)

        def spy(ctx, inner=inner, name=name):
            seen[name].append((ctx.round, torch.cat([m.reshape(-1) for m in ctx.current_masks().values()]).clone()))
            return inner.fn(dataclasses.replace(ctx, options=inner.options()))

        methods.register(f"{name}_spy", description="spy", data="required", rounds=10, regrow=inner.regrow,
                         copies=inner.copies)(spy)
    model = mlp(bias=True).double()
    data_ = [(x.double(), y) for x, y in batches(n=4, size=32)]
    for name in seen:
        spied = prune(model, f"{name}_spy", 0.1, data=data_)
        assert all(torch.equal(spied[n], m) for n, m in prune(model, name, 0.1, data=data_).items())
    force = [m for _, m in seen["force"]]
    assert [r for r, _ in seen["force"]] == list(range(10))
    assert sum(int((b & ~a).sum()) for a, b in zip(force[:-1], force[1:])) > 0  # weights dropped, then back
    snip = [m for _, m in seen["iterative_snip"]]
    assert all(not bool((b & ~a).any()) for a, b in zip(snip[:-1], snip[1:]))  # pruned weights stay pruned
    assert [int(m.sum()) for m in snip] == sorted((int(m.sum()) for m in snip), reverse=True)


# ---- PHEW: walks make paths --------------------------------------------------------------------------

def test_phew_keeps_exact_counts_and_makes_input_to_output_paths():
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=(64,), width=50, depth=4)
    for seed in range(3):
        m = prune(model, "phew", 0.02, seed=seed)
        weights = [m[n] for n in m]
        assert sum(int(w.sum()) for w in weights) == round(0.02 * sum(w.numel() for w in weights))
        for before, after in zip(weights[:-1], weights[1:]):
            incoming = before.any(1)  # hidden unit j receives a kept weight
            outgoing = after.any(0)  # and sends one on
            assert torch.equal(incoming, outgoing), "a dead-end unit"


def test_phew_density_profile_is_stable_across_seeds_and_follows_residual_graphs():
    torch.manual_seed(0)
    model = models.create("resnet20")
    profiles = torch.tensor([list(prune(model, "phew", 0.05, seed=s).layer_density().values()) for s in range(3)])
    assert bool((profiles > 0).all())  # every layer, shortcuts included, on some path
    spread = profiles.std(0) / profiles.mean(0)
    assert float(spread.max()) < 0.15


def test_phew_refuses_what_it_cannot_follow():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    with pytest.raises(SketchpruneError, match="cannot follow units through"):
        prune(Cat(), "phew", 0.5)


# ---- IMP: levels, rewinding, resume --------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def imp_trainer(digits, folder=None):
    cfg = TrainConfig(epochs=2, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=128)
    return Trainer(digits, cfg, folder, seed=0)


def test_imp_prunes_by_trained_magnitude_and_rewinds(digits):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=32)
    init = copy.deepcopy(model.state_dict())
    m = prune(model, "imp", 0.5, trainer=imp_trainer(digits), imp_rewind_steps=3)
    assert m.density() == pytest.approx(0.5, abs=1e-3) and m.meta["method"] == "imp"
    assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    assert not torch.equal(m.start_state["1.weight"], init["1.weight"])  # rewound to step 3, not to init
    # one level by hand: train the dense net, keep the largest trained magnitudes
    one = prune(model, "imp", 0.8, trainer=imp_trainer(digits), imp_fraction=0.2)
    ref = copy.deepcopy(model)
    from sketchprune.masks import Masks

    imp_trainer(digits)(ref, Masks({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(ref).items()}),
                        "x")
    trained = torch.cat([p.detach().abs().reshape(-1) for p in prunable_parameters(ref).values()])
    want = torch.zeros_like(trained, dtype=torch.bool)
    want[torch.topk(trained, round(0.8 * trained.numel())).indices] = True
    assert torch.equal(flat(one), want)
    assert all(torch.equal(one.start_state[k], init[k]) for k in init)  # no rewind steps: initialization


def test_a_killed_imp_run_resumes_at_its_level(digits, tmp_path):
    torch.manual_seed(0)
    model = models.create("mlp", input_shape=digits.input_shape, width=32)
    full = prune(model, "imp", 0.5, trainer=imp_trainer(digits, tmp_path / "full"))

    class Dies(Trainer):
        calls = 0

        def __call__(self, *a, **k):
            Dies.calls += 1
            if Dies.calls == 3:
                raise KeyboardInterrupt  # killed during the third level
            return super().__call__(*a, **k)

    base = imp_trainer(digits, tmp_path / "part")
    with pytest.raises(KeyboardInterrupt):
        prune(model, "imp", 0.5, trainer=Dies(base.data, base.config, base.folder))
    done = (tmp_path / "part" / "imp-level-0" / "checkpoint.pt").stat().st_mtime_ns
    resumed = prune(model, "imp", 0.5, trainer=base)
    assert torch.equal(flat(full), flat(resumed))
    assert (tmp_path / "part" / "imp-level-0" / "checkpoint.pt").stat().st_mtime_ns == done  # not retrained


def test_imp_needs_a_trainer():
    with pytest.raises(SketchpruneError, match="trains while it prunes"):
        prune(mlp(), "imp", 0.5)


# ---- mode="auto" -------------------------------------------------------------------------------------

def test_auto_keeps_top_k_where_it_feeds_every_layer_and_samples_where_it_starves_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 60), nn.ReLU(), nn.Linear(60, 10))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # the classifier's magnitudes lose every global ranking
    from sketchprune.auto import STARVED

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        topk = prune(model, "magnitude", 0.1)
        auto = prune(model, "magnitude", 0.1, mode="auto", seed=3)
    assert topk.collapsed() == ["2.weight"]
    assert auto.meta["auto"]["mode"] == "sample" and auto.collapsed() == []
    assert min(auto.layer_density().values()) >= 0.5 * STARVED * 0.1  # expected >= STARVED x density
    again = prune(model, "magnitude", 0.1, mode="auto", seed=3)
    assert torch.equal(flat(auto), flat(again))  # deterministic given the seed
    balanced = mlp()
    a = prune(balanced, "magnitude", 0.5, mode="auto")
    assert a.meta["auto"]["mode"] == "topk" and torch.equal(flat(a), flat(prune(balanced, "magnitude", 0.5)))
    assert prune(model, "magnitude", 0.1, mode="auto", scope="layer").meta["auto"]["mode"] == "topk"


def test_auto_chooses_its_own_power_and_refuses_mask_methods():
    with pytest.raises(SketchpruneError, match="chooses the power"):
        prune(mlp(), "magnitude", 0.5, mode="auto", power=2.0)
    with pytest.raises(SketchpruneError, match="no sampled form"):
        prune(mlp(), "phew", 0.5, mode="auto")
