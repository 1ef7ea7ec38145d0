"""Every registered weight method on attention models: ``nn.TransformerEncoder`` on sequence inputs and
a GPT (Embedding, causal attention blocks, a language-model head) on token inputs. Each one prunes
them with exact counts and the same mask for the same seed, or refuses in one line saying why;
``MultiheadAttention``'s ``in_proj_weight`` is a prunable weight, and the helpers that see weights
(sketch's products, SynFlow's all-ones input, the costs, the diagnostics) treat it as one."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sketchprune import SketchpruneError, data, methods, models, prune, seeding
from sketchprune.costs import _layer_macs, costs
from sketchprune.diagnostics import mask_diagnostics
from sketchprune.experiment import Trainer
from sketchprune.layers import example_input, token_embedding
from sketchprune.pruning import UnprunedWarning, prunable_parameters, prune_units, score
from sketchprune.selection import budget
from sketchprune.train import TrainConfig

REFUSED = {"px": "px's path kernel .*attention", "phew": "phew walks .*attention"}
"""Methods that cannot apply to attention, and what their one-line refusal says."""
SMALL = {"ntt": {"ntt_steps": 3, "ntt_batch": 8}, "ntk_sap": {"ntk_sap_redraws": 1, "ntk_sap_samples": 8},
         "synflow": {"iterations": 5}, "iterative_snip": {"iterations": 3}, "force": {"iterations": 3},
         "ntk": {"ntk_samples": 4}}
"""Options that keep a method's test fast (fewer rounds, steps or samples)."""


class MeanOverPositions(nn.Module):
    def forward(self, x):
        return x.mean(1)


def encoder_model(seed: int = 0) -> nn.Module:
    """A plain ``nn.TransformerEncoder`` (post-norm, ReLU) read out by a mean over positions and a Linear."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), MeanOverPositions(),
                         nn.Linear(16, 4))


def gpt_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.create("gpt", num_classes=16, input_shape=(16,), width=16, depth=1, heads=2)


def sequence_data() -> data.Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 8, 16, generator=g)
    y = (x[:, 0, :4].argmax(1)).long()  # the class is where the first position peaks
    return data.Dataset("sequences", x[:32], y[:32], x[32:], y[32:], 4)


@pytest.fixture(scope="module")
def token_data():
    return data.load("tokens", samples=40)


def cases(token_data):
    return {"encoder": (encoder_model, sequence_data()), "gpt": (gpt_model, token_data)}


def mask_makers() -> list[str]:
    """The registered weight methods that make masks (dynamic sparse training's updaters move a
    given mask and refuse to make one; their runner says so for any model)."""
    from sketchprune.pruning import PruneOptions

    out = []
    for name in methods.names("weights"):
        spec = methods.get(name)
        try:
            spec.runner.validate(spec, PruneOptions())
        except SketchpruneError:
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("model_name", ["encoder", "gpt"])
@pytest.mark.parametrize("method", mask_makers())
def test_every_method_prunes_attention_models_exactly_and_seeded_or_refuses(method, model_name, token_data):
    build, ds = cases(token_data)[model_name]
    spec = methods.get(method)
    batches = [(ds.train_x[:16], ds.train_y[:16]), (ds.train_x[16:32], ds.train_y[16:32])]
    cfg = TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=0.0)
    options = dict(SMALL.get(method, {}))
    for field in getattr(spec.options, "__dataclass_fields__", {}):  # a method that trains: act at every step
        if field.endswith(("_interval", "_every")) and field not in options:
            options[field] = 1

    def run(seed: int):
        model = build()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # layer collapse at this density is allowed
            masks = prune(model, method, 0.2, data=batches, seed=seed, input_shape=ds.input_shape,
                          trainer=Trainer(ds, cfg, seed=seed), **options)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was
        return model, masks

    if method in REFUSED:
        with pytest.raises(SketchpruneError, match=REFUSED[method]) as error:
            run(0)
        assert "\n" not in str(error.value)
        return
    model, a = run(0)
    params = prunable_parameters(model)
    total = sum(p.numel() for p in params.values())
    assert set(a) == set(params) and any(n.endswith("in_proj_weight") for n in a)
    assert all(a[n].shape == p.shape and a[n].dtype == torch.bool for n, p in params.items())
    assert sum(int(m.sum()) for m in a.values()) == budget(0.2, total)
    _, b = run(0)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_in_proj_weight_is_prunable_by_default_and_embeddings_stay_dense_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnprunedWarning)
        enc = prunable_parameters(encoder_model())
        gpt = prunable_parameters(gpt_model())
    assert {"0.layers.0.self_attn.in_proj_weight", "0.layers.0.self_attn.out_proj.weight",
            "0.layers.0.linear1.weight", "2.weight"} <= set(enc)
    assert "blocks.0.attn.in_proj_weight" in gpt and not any(n.startswith(("tokens", "positions")) for n in gpt)
    with_bias = prunable_parameters(gpt_model(), include_bias=True)
    assert "blocks.0.attn.in_proj_bias" in with_bias and "blocks.0.attn.out_proj.bias" in with_bias
    # separate projections (keys and values of other widths) are three weights
    mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=3)
    assert set(prunable_parameters(mha)) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}
    assert set(prunable_parameters(gpt_model(), include=("tokens.weight",))) >= {"tokens.weight"}


def test_a_token_model_is_known_by_its_first_layer():
    gpt = gpt_model()
    assert token_embedding(gpt) is gpt.tokens
    assert token_embedding(models.create("transformer")) is None  # positions table, but a Linear takes the input
    assert example_input(gpt, (16,)).dtype == torch.long and example_input(encoder_model(), (8, 16)).dtype == torch.float32


def test_sketch_scores_attention_projections_as_products():
    """``|W[j, k]| ||g_j|| ||a_k||`` for every block of ``in_proj_weight`` (its own input each) and
    ``out_proj`` (input: the attention's output), against an attention written out by hand."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(6, 2, batch_first=True)
    q_in, kv_in = torch.randn(5, 4, 6), torch.randn(5, 3, 6)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x[:, :4], x[:, 4:], x[:, 4:], need_weights=False)[0].flatten(1)

    model = Cross()
    x = torch.cat([q_in, kv_in], 1)
    scores = score(model, "sketch", data=[(x, torch.zeros(5, dtype=torch.long))])
    # the same forward by hand
    W, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    q = (q_in @ W[:6].T + b[:6]).requires_grad_()
    k = (kv_in @ W[6:12].T + b[6:12]).requires_grad_()
    v = (kv_in @ W[12:].T + b[12:]).requires_grad_()

    def heads(t):
        return t.view(5, -1, 2, 3).transpose(1, 2)

    att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(3), -1) @ heads(v)
    a = att.transpose(1, 2).reshape(5, 4, 6)
    out = F.linear(a, mha.out_proj.weight.detach(), mha.out_proj.bias.detach())
    out.retain_grad()
    y = out.flatten(1)
    g = seeding.generator(0, "prune")
    vec = torch.randn(y.shape, generator=g)
    (y * vec).sum().backward()

    def norms(t):
        return t.reshape(-1, t.shape[-1]).pow(2).sum(0).sqrt()

    out_norm = torch.cat([norms(q.grad), norms(k.grad), norms(v.grad)])
    in_norm = torch.cat([norms(q_in).expand(6, 6), norms(kv_in).expand(6, 6), norms(kv_in).expand(6, 6)])
    expected = W.abs() * out_norm.view(-1, 1) * in_norm
    torch.testing.assert_close(scores["attn.in_proj_weight"], expected, rtol=1e-4, atol=1e-7)
    expected_out = mha.out_proj.weight.detach().abs() * norms(out.grad).view(-1, 1) * norms(a.detach()).view(1, -1)
    torch.testing.assert_close(scores["attn.out_proj.weight"], expected_out, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("batch_first", [True, False])
def test_sketch_runs_attention_with_the_same_output(batch_first):
    from sketchprune.methods.sketch_optimal import _attention_products

    torch.manual_seed(0)
    for mha, kv_width in ((nn.MultiheadAttention(8, 2, batch_first=batch_first), 8),
                          (nn.MultiheadAttention(8, 2, kdim=5, vdim=5, batch_first=batch_first, add_bias_kv=True), 5)):
        q = torch.randn(3, 4, 8) if batch_first else torch.randn(4, 3, 8)
        kv = torch.randn(3, 6, kv_width) if batch_first else torch.randn(6, 3, kv_width)
        causal = torch.ones(4, 6, dtype=torch.bool).triu(1)
        for args, kwargs in (((q, kv, kv), {"attn_mask": causal}), ((q, kv, kv), {"need_weights": False})):
            if kv_width == 8:
                args = (q, q, q)
                kwargs = {k: (v[:, :4] if k == "attn_mask" else v) for k, v in kwargs.items()}
            want = mha(*args, **kwargs)
            got = _attention_products(mha, "m", args, kwargs, {}, {})
            torch.testing.assert_close(got[0], want[0])
            assert (got[1] is None) == (want[1] is None)


def test_synflow_on_a_token_model_feeds_ones_after_the_embedding():
    """SynFlow's R of a GPT is that of its blocks fed ones at the embedding's output: the scores
    equal those of the same network with the token embedding replaced by a constant-ones input."""
    gpt = gpt_model()
    scores = score(gpt, "synflow", input_shape=(16,))

    class FromOnes(nn.Module):  # the same network without its token embedding, fed ones in its place
        def __init__(self, inner):
            super().__init__()
            self.positions, self.blocks, self.norm, self.head = inner.positions, inner.blocks, inner.norm, inner.head

        def forward(self, x):
            h = torch.ones(x.shape[0], 16, 16, dtype=self.head.weight.dtype) + self.positions.weight
            return self.head(self.norm(self.blocks(h))[:, -1])

    ref = FromOnes(gpt_model())
    ref.input_shape = (16,)
    expected = score(ref, "synflow", input_shape=(16,))
    assert set(scores) == set(expected)
    for n, s in scores.items():
        torch.testing.assert_close(s, expected[n])
        assert bool((s > 0).any())  # the flow reaches every layer


def test_costs_and_diagnostics_count_attention_weights():
    gpt = gpt_model()  # width 16, one block, 16 positions, head read at the last one
    macs = _layer_macs(gpt, example_input(gpt, (16,)))
    assert macs["blocks.0.attn.in_proj_weight"] == 3 * 16 * 16 * 16
    assert macs["blocks.0.attn.out_proj.weight"] == 16 * 16 * 16
    assert macs["blocks.0.mlp.0.weight"] == 64 * 16 * 16 and macs["head.weight"] == 16 * 16
    masks = prune(gpt, "magnitude", 0.5, input_shape=(16,))
    dense, pruned = costs(gpt, (16,)), costs(gpt, (16,), dict(masks))
    kept_dropped = sum(m.numel() - int(m.sum()) for m in masks.values())
    assert dense["params"] - pruned["params"] == kept_dropped
    assert 0 < pruned["macs"] < dense["macs"]
    d = mask_diagnostics(gpt, masks, (16,))
    assert d["connected"] and d["min_layer_density"] > 0 and math.isfinite(d["log10_paths"])  # ones after the embedding


def test_ntk_says_nothing_on_attention():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune(encoder_model(), "ntk", 0.3, input_shape=(8, 16), ntk_samples=2)
        prune(gpt_model(), "ntk", 0.3, ntk_samples=2)


def test_prune_units_keeps_attention_whole_and_refuses_embeddings_in_one_line():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x = torch.randn(8, 8, 16)
    for method in ("l1", "sketch", "synflow", "random"):
        small = prune_units(enc, method, 0.5, input_shape=(8, 16))
        assert [small.layers[i].linear1.out_features for i in range(2)] == [16, 16]  # the feed-forward units
        assert all(small.layers[i].self_attn.embed_dim == 16 for i in range(2))
        assert small(x).shape == (8, 8, 16)
    for model in (gpt_model(), models.create("transformer")):
        with pytest.raises(SketchpruneError, match="Embedding .*prune its weights with prune") as error:
            prune_units(model, "l1", 0.5)
        assert "\n" not in str(error.value)


def test_a_failure_names_the_method_when_the_model_runs_and_the_input_when_it_does_not(scratch_registry):
    @methods.register("breaks_on_sequences", description="fails inside the method (test)")
    def breaks(ctx):
        raise RuntimeError("a method's own shape assumption")

    with pytest.raises(SketchpruneError, match=r"failed on this model .*the model runs on inputs of shape "
                                               r"\(8, 16\), so it is the method.*MultiheadAttention") as error:
        prune(encoder_model(), "breaks_on_sequences", 0.5, input_shape=(8, 16))
    assert "check that the data" not in str(error.value)
    with pytest.raises(SketchpruneError, match=r"the model itself fails on inputs of shape \(8, 15\).*check that "
                                               "the data or input_shape fit the model"):
        prune(encoder_model(), "synflow", 0.5, input_shape=(8, 15))


def test_phew_says_why_it_does_not_walk_a_linear_layer():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.spare, self.b = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    with pytest.raises(SketchpruneError, match="phew found no call of layer spare .*never called"):
        prune(Unused(), "phew", 0.5)


def test_registry_attention_models_train_on_local_data():
    """``transformer`` on MNIST-1D and ``gpt`` on ``tokens`` (both generated here) learn above chance
    in one short epoch."""
    from sketchprune.train import train

    tokens = data.load("tokens", samples=2000)
    assert tokens.train_x.dtype == torch.long and tokens.num_classes == 16 and tokens.input_shape == (16,)
    assert torch.equal(tokens.train_x, data.load("tokens", samples=2000).train_x)  # generated the same each time
    torch.manual_seed(0)
    gpt = models.create("gpt", num_classes=16, input_shape=(16,))
    result = train(gpt, tokens, TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0.0),
                   device="cpu")
    assert result["final_test_acc"] > 2 / 16
    sequences = data.load("mnist1d")
    torch.manual_seed(0)
    transformer = models.create("transformer", input_shape=sequences.input_shape)
    result = train(transformer, sequences, TrainConfig(epochs=3, batch_size=64, optimizer="adam", lr=3e-3,
                                                       weight_decay=0.0), device="cpu")
    assert result["final_test_acc"] > 3 / 10


def test_the_token_task_is_its_rule_of_the_last_two_tokens():
    from sketchprune.data.tokens import markov_tokens

    xtr, ytr, xte, yte = markov_tokens(samples=3000, vocab=6, length=8, noise=0.0)
    x, y = torch.cat([xtr, xte]), torch.cat([ytr, yte])
    assert x.shape == (3000, 8) and len(xtr) == 2400 and int(x.max()) == 5 and int(x.min()) == 0
    pair = x[:, -2] * 6 + x[:, -1]
    for p in pair.unique():  # noise 0: the next token is a function of the last two
        assert y[pair == p].unique().numel() == 1
    noisy = markov_tokens(samples=3000, vocab=6, length=8, noise=0.5)
    assert not torch.equal(noisy[1], ytr)
    with pytest.raises(SketchpruneError, match="length must be >= 2"):
        markov_tokens(length=1)
