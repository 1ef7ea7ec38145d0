"""Shared fixtures: the data folder, the digits data set, small seeded models, batches and helpers
that tests in several files use."""

import os

import pytest
import torch
from torch import nn

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True, scope="session")
def _data_root(tmp_path_factory):
    """Generated data (MNIST-1D) is cached in a per-session folder, never in the user's home."""
    os.environ["SKETCHPRUNE_DATA"] = str(tmp_path_factory.mktemp("data"))
    yield


@pytest.fixture
def scratch_registry():
    """Methods registered inside a test are removed afterwards."""
    from sketchprune.methods import registry

    before = dict(registry._METHODS)
    yield
    registry._METHODS.clear()
    registry._METHODS.update(before)


# ---- data --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (1297 training, 500 test images), loaded once for the session."""
    from sketchprune import data

    return data.load("digits")


@pytest.fixture
def batches():
    """``batches(n=3, size=24, seed=0, classes=3)``: ``n`` seeded batches of 12-feature inputs and labels."""

    def make(n=3, size=24, seed=0, classes=3):
        g = torch.Generator().manual_seed(seed)
        return [(torch.randn(size, 12, generator=g), torch.randint(0, classes, (size,), generator=g))
                for _ in range(n)]

    return make


# ---- small models: one seeded builder, a fixture for each shape the tests use -------------------------

def relu_mlp(*widths: int, bias: bool = True, seed: int = 0, flatten: bool = False) -> nn.Sequential:
    """Linear layers of ``widths`` with a ReLU between each two (behind a Flatten if asked),
    initialized right after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@pytest.fixture
def tiny_mlp():
    """``tiny_mlp(bias=True, seed=0)``: Flatten, then 12 -> 16 -> 8 -> 3 (the Linear layers are 1, 3, 5)."""

    def build(bias=True, seed=0):
        return relu_mlp(12, 16, 8, 3, bias=bias, seed=seed, flatten=True)

    return build


@pytest.fixture
def mlp():
    """``mlp(bias=True, seed=0, widths=(12, 16, 10, 3))``: the literature methods' network."""

    def build(bias=True, seed=0, widths=(12, 16, 10, 3)):
        return relu_mlp(*widths, bias=bias, seed=seed)

    return build


@pytest.fixture
def units_mlp():
    """``units_mlp(seed=0, bias=True)``: 12 -> 20 -> 16 -> 3, hidden widths that halve to 10 and 8."""

    def build(seed=0, bias=True):
        return relu_mlp(12, 20, 16, 3, bias=bias, seed=seed)

    return build


@pytest.fixture
def net():
    """``net(seed=0)``: 12 -> 16 -> 4."""

    def build(seed=0):
        return relu_mlp(12, 16, 4, seed=seed)

    return build


@pytest.fixture
def small_net():
    """``small_net(seed=0)``: 10 -> 20 -> 3."""

    def build(seed=0):
        return relu_mlp(10, 20, 3, seed=seed)

    return build


# ---- helpers -------------------------------------------------------------------------------------------

@pytest.fixture
def flat():
    """``flat(masks)``: every tensor of a name -> tensor mapping in one flat vector, in order."""

    def flatten(masks):
        return torch.cat([m.reshape(-1) for m in masks.values()])

    return flatten


@pytest.fixture
def round_scores():
    """``round_scores(method, model, data=None, input_shape=None, **options)``: one round of a
    registered method's scores on ``model`` itself."""
    from sketchprune import methods
    from sketchprune.pruning import prunable_parameters

    def score(method, model, data=None, input_shape=None, **options):
        spec = methods.get(method)
        ctx = methods.Context(spec, model, prunable_parameters(model), spec.make_options(options),
                              torch.Generator().manual_seed(0), data, input_shape)
        return spec.fn(ctx)

    return score


@pytest.fixture
def unit_scores():
    """``unit_scores(model, method, data, input_shape)``: the unit form of ``method`` on the hidden layer
    of a two-layer network (its output layer ignored)."""
    from sketchprune import methods

    def scores(model: nn.Module, method: str, data, input_shape) -> list[torch.Tensor]:
        import torch_pruning as tp

        graph = tp.DependencyGraph().build_dependency(model, example_inputs=data[0][0][:1])
        groups = list(graph.get_all_groups(ignored_layers=[model[2]], root_module_types=(nn.Linear,)))
        spec = methods.get(method)
        return spec.units(methods.UnitContext(spec, model, groups, spec.options(), torch.Generator(), data,
                                              input_shape))

    return scores


@pytest.fixture
def functional_loss():
    """``functional_loss(model, params, x, y, T=1.0)``: the summed cross-entropy of ``model`` run on
    ``params`` (torch.func), logits divided by the temperature ``T``."""
    import torch.nn.functional as F
    from torch.func import functional_call

    def loss(model, params, x, y, T=1.0):
        return F.cross_entropy(functional_call(model, params, (x,)) / T, y, reduction="sum")

    return loss


@pytest.fixture
def one_line_error():
    """``one_line_error(excinfo)``: the message of a caught error, checked to be one line."""

    def message(excinfo) -> str:
        msg = str(excinfo.value)
        assert "\n" not in msg
        return msg

    return message


@pytest.fixture
def cli_error(capsys):
    """``cli_error()``: what the CLI printed on stderr, checked to be one line starting ``error: ``."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: "), err
        return err

    return read


SWEEP_TEMPLATE = """
fixed:
  model: mlp
  dataset: digits
  model_options: {{width: 16}}
  train: {{epochs: {epochs}, optimizer: adam, lr: 0.003, weight_decay: 0.0, batch_size: 64}}
grid:
  method: {methods}
  mode: [topk, sample]
  compression: [2, 10]
"""


@pytest.fixture
def write_sweep():
    """``write_sweep(folder, epochs=2, methods="[magnitude, synflow]", name="s.yaml")``: a small sweep
    file (mlp on digits; methods x modes topk, sample x compressions 2, 10) written to ``folder / name``."""

    def write(folder, epochs=2, methods="[magnitude, synflow]", name="s.yaml"):
        p = folder / name
        p.write_text(SWEEP_TEMPLATE.format(epochs=epochs, methods=methods))
        return p

    return write
