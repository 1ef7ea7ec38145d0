"""Planted tickets (Fischer & Burkholz, "Plant 'n' Seek: Can You Find the Winning Ticket?", ICLR 2022).

A very sparse ReLU network that solves a task (the *ticket*) is built by hand and hidden in a
randomly initialized wider one (the *mother* network), so the winning ticket of the mother is
known and a pruning method can be scored by how much of it it finds.

Compared with RelationalML/PlantNSeek at commit 5d1cacd96d2e35ab38bf6251ed7e14b2b8ea1595
(``plant_lottery_tickets/tickets.py``: ``param_outer``, ``lottery_relu``, ``lottery_sphere``,
``lottery_helix_wide``; ``plant.py``: ``init_He_scaled``, ``plant_target``, ``find_ind``,
``target_ind``; ``datagen.py``: the three data sets; ``Synaptic-Flow-Extended/Models/circler.py``
and ``train.py``/``Experiments/singleshot.py`` for how they are put together and evaluated).
What agrees: the constructions layer by layer (depth counts the layer widths, input and output
included, so depth 5 is four Linear layers; circle mirrors ``x -> relu(x), relu(-x)``, sums to
``|x_i|``, folds by rotations for depth > 5 and fits ``x^2`` with 10 knots of alternating sign;
relu is a single path of unit weights; helix is ``relu(x + 1)`` then a 30-knot two-layer fit of
the three coordinates, identities after), the class logits with slopes 5, 10, 20, 40 and
boundaries at radius^2 0.2, 0.5, 0.7, He initialization ``N(0, 2/fan_in)`` with bias scale the
running product of the weight scales, Algorithm 1 (each ticket neuron is hosted by the mother
neuron whose incoming weights and bias best match the ticket's in sign and direction: the
positive projection scale ``c`` with the smallest L1 distance; the ticket's weights times ``c``
are written in, and the next layer divides its incoming ticket weights by ``c``; the output
neurons are reordered so that output ``j`` is the ticket's ``j``), the data (10,000 samples,
``U[-1, 1]`` inputs, the first 90 % for training; label noise 0.01 moves a circle label to the
runner-up class; Gaussian noise of standard deviation 0.01 on the regression targets) and the
metric (accuracy of the arg-max; regression MSE after the least-squares output scale per
coordinate, the reference's ``rescale_output``; the ticket's own metric divides its outputs
by the planted output scales ``c``, as the reference's ``net_eval``).

Where we depart: a ticket neuron searches only the mother neurons no other ticket neuron of its
layer took (the reference searches all of them and, when the best is taken, falls back to the
first free one with a scale from a single weight); when no free neuron matches in sign, ours takes
the free one of largest positive projection (or matches norms when none projects positively).
The reference fits the regression output scale per test batch of 256; ours fits it once on the
whole test split. The data come from seeded generators (the reference uses numpy's global state
and a fixed shuffle, which changes nothing for i.i.d. samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sketchprune import seeding
from sketchprune.data import Dataset
from sketchprune.errors import check
from sketchprune.masks import Masks

TASKS = ("circle", "relu", "helix")
CLASS_BOUNDS = (0.2, 0.5, 0.7)
"""Circle: squared radii of the class boundaries (4 classes)."""
NOISE = {"circle": 0.01, "relu": 0.01, "helix": 0.01}
"""The paper's noise: label-noise probability (circle), target noise standard deviation (relu, helix)."""
CIRCLE_KNOTS = 10
HELIX_KNOTS = 30
SAMPLES = 10_000
TRAIN_FRACTION = 0.9

Layer = tuple[np.ndarray, np.ndarray]
"""One layer as the reference holds it: weights ``(in, out)`` and bias ``(out,)``, float64."""


# ---- the tickets ------------------------------------------------------------------------------------

def _two_layer_fit(knots: np.ndarray, signs: np.ndarray, f: Callable[[np.ndarray], np.ndarray]
                   ) -> tuple[Layer, Layer]:
    """A two-layer ReLU net equal, on ``x >= knots[0]``, to the piecewise-linear interpolation of
    ``f`` at ``knots`` (continued with the slope to ``f(last + step)``).

    Hidden unit k is ``relu(s_k (x - t_k))`` with sign ``s_k`` (the first is +1); a unit of sign
    -1 is ``relu(x - t_k) - (x - t_k)``, so its kink weight is the same and its linear part is
    moved into the first unit, which is linear on the domain. (The reference's ``param_outer``.)
    """
    signs = signs.astype(np.float64).copy()
    signs[0] = 1.0
    t = np.append(knots, knots[-1] + (knots[1] - knots[0]))
    slopes = np.diff(f(t)) / np.diff(t)
    kinks = np.diff(slopes)  # at knots 1..K-1
    out_w = np.concatenate([[slopes[0] + kinks[signs[1:] == -1].sum()], kinks])
    in_w, in_b = signs, -knots * signs
    hidden_at_first = np.maximum(knots[0] * in_w + in_b, 0.0)
    out_b = np.array([f(knots[:1])[0] - float(hidden_at_first @ out_w)])
    return (in_w.reshape(1, -1), in_b), (out_w.reshape(-1, 1), out_b)


def _alternating(k: int, last: float | None = None) -> np.ndarray:
    s = np.ones(k)
    s[1::2] = -1.0
    if last is not None:
        s[-1] = last
    return s


def relu_ticket(depth: int) -> list[Layer]:
    """``relu(x)`` through ``depth - 1`` layers of one unit each (weights 1, biases 0)."""
    check(depth >= 3, f"the relu ticket needs depth >= 3 (input, hidden, output widths), got {depth}")
    return [(np.ones((1, 1)), np.zeros(1)) for _ in range(depth - 1)]


def _helix_coordinates() -> list[Callable[[np.ndarray], np.ndarray]]:
    def angle(x: np.ndarray) -> np.ndarray:
        return 5 * np.pi + 3 * np.pi * x

    return [lambda x: angle(x) * np.cos(angle(x)) / (8 * np.pi),
            lambda x: angle(x) * np.sin(angle(x)) / (8 * np.pi),
            lambda x: angle(x) / (8 * np.pi)]


def helix_ticket(depth: int, knots: int = HELIX_KNOTS) -> list[Layer]:
    """``x -> relu(x + 1)``, then a ``knots``-knot two-layer fit of the three helix coordinates on
    ``[0, 2]``; beyond depth 4, identities carry the (shifted, positive) coordinates to the output."""
    check(depth >= 4, f"the helix ticket needs depth >= 4, got {depth}")
    t = np.linspace(0.0, 2.0, knots)
    signs = _alternating(knots)
    fits = [_two_layer_fit(t, signs, lambda x, f=f: f(x - 1)) for f in _helix_coordinates()]
    (w1, b1), _ = fits[0]
    w2 = np.hstack([fit[1][0] for fit in fits])
    b2 = np.concatenate([fit[1][1] for fit in fits])
    layers: list[Layer] = [(np.ones((1, 1)), np.ones(1)), (w1, b1), (w2, b2)]
    if depth > 4:
        layers[-1] = (w2, b2 + 1.0)  # positive through the ReLUs that follow
        layers += [(np.eye(3), np.zeros(3)) for _ in range(4, depth)]
        layers[-1] = (layers[-1][0], -np.ones(3))
    return layers


def circle_ticket(depth: int, knots: int = CIRCLE_KNOTS, bounds: tuple[float, ...] = CLASS_BOUNDS) -> list[Layer]:
    """Four class logits from ``x1^2 + x2^2``: mirror (``relu(+-x_i)``, summed to ``|x_i|``), fold by
    ``depth - 5`` rotations (each halves the angle of the wedge the point lies in; the norm is
    kept), fit the squares of the two remaining coordinates, and logits ``a_j r^2 + b_j`` with
    slopes 5, 10, 20, 40 that cross at the class boundaries."""
    check(depth >= 5, f"the circle ticket needs depth >= 5, got {depth}")
    square = lambda x: x ** 2  # noqa: E731
    mirror = np.zeros((2, 4))
    mirror[0, 0], mirror[0, 1], mirror[1, 2], mirror[1, 3] = 1, -1, 1, -1
    fold = np.zeros((4, 2))
    fold[0, 0] = fold[1, 0] = fold[2, 1] = fold[3, 1] = 1
    layers: list[Layer] = [(mirror, np.zeros(4)), (fold, np.zeros(2))]
    coords = np.eye(2)  # coordinates in terms of the current units
    phi = np.pi / 2
    v = np.array([1.0, 0.0])
    for _ in range(depth - 5):
        phi /= 2
        v = np.array([np.cos(phi), np.sin(phi)])
        w = np.zeros((coords.shape[1], 3))
        w[:, 0] = v[0] * coords[0] + v[1] * coords[1]
        w[:, 1] = v[1] * coords[0] - v[0] * coords[1]
        w[:, 2] = -w[:, 1]
        coords = np.array([[v[0], v[1], v[1]], [v[1], -v[0], -v[0]]])
        layers.append((w, np.zeros(3)))
    if depth == 5:
        n_main = n_ortho = knots
        ortho_top = 1.0
    else:
        main_top = math.sqrt(2)
        ortho_top = abs(v[1]) * math.sqrt(bounds[-1]) + 0.01
        n_main = int(min(math.ceil(main_top / (ortho_top + main_top) * knots * 2), knots * 2 - 3))
        n_ortho = int(max(2 * knots - n_main, 3))
    (wo1, bo1), (wo2, bo2) = _two_layer_fit(np.linspace(0, ortho_top, n_ortho), _alternating(n_ortho, 1.0), square)
    if depth == 5:  # both coordinates through the same fit
        w1 = np.zeros((2, 2 * n_ortho))
        w1[0, :n_ortho] = w1[1, n_ortho:] = wo1.ravel()
        b1 = np.concatenate([bo1, bo1])
        slopes_in = np.concatenate([wo2.ravel(), wo2.ravel()])
        offset = 2 * bo2[0]
    else:
        (wm1, bm1), (wm2, bm2) = _two_layer_fit(np.linspace(0, math.sqrt(2), n_main), _alternating(n_main, 1.0),
                                               square)
        w1 = np.zeros((3, n_main + n_ortho))
        w1[0, :n_main] = wm1.ravel()
        w1[1, n_main:] = w1[2, n_main:] = wo1.ravel()
        b1 = np.concatenate([bm1, bo1])
        slopes_in = np.concatenate([wm2.ravel(), wo2.ravel()])
        offset = bm2[0] + bo2[0]
    layers.append((w1, b1))
    classes = len(bounds) + 1
    w2, b2 = np.zeros((len(slopes_in), classes)), np.zeros(classes)
    a, shift = 5.0, 0.0
    w2[:, 0], b2[0] = a * slopes_in, offset * a
    for j in range(1, classes):
        shift += (a - 2 * a) * bounds[j - 1]
        a *= 2
        w2[:, j], b2[j] = a * slopes_in, shift + offset * a
    layers.append((w2, b2))
    return layers


def ticket_layers(task: str, depth: int) -> list[Layer]:
    """The hand-built ticket of ``task`` (weights ``(in, out)`` and biases, float64)."""
    check(task in TASKS, f"unknown planted task {task!r}; use one of {', '.join(TASKS)}")
    return {"circle": circle_ticket, "relu": relu_ticket, "helix": helix_ticket}[task](depth)


# ---- planting ---------------------------------------------------------------------------------------

def he_init(widths: list[int], rng: np.random.Generator) -> list[Layer]:
    """He initialization as the paper's ``init_He_scaled``: ``W ~ N(0, 2 / fan_in)``, bias
    ``~ N(0, s_l^2)`` with ``s_l`` the running product of the weight standard deviations."""
    layers, bias_scale = [], 1.0
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        std = math.sqrt(2.0 / fan_in)
        bias_scale *= std
        w = rng.normal(0.0, std, size=(fan_in, fan_out))
        layers.append((w, rng.normal(0.0, bias_scale, size=fan_out)))
    return layers


def _host(candidates: np.ndarray, target: np.ndarray, free: np.ndarray) -> tuple[int, float]:
    """The free mother neuron (a column of ``candidates``: its bias and incoming weights from the
    hosts of the ticket's inputs) that best matches ``target`` (the ticket neuron's bias and
    incoming weights, in the mother's scale), and the scale ``c > 0`` to write ``c * target``."""
    norm2 = float(target @ target)
    check(norm2 > 0, "a ticket neuron has neither weights nor bias; the ticket is malformed")
    cols = candidates[:, free]
    c = target @ cols / norm2
    nz = target != 0
    signs = np.all(np.sign(cols[nz]) == np.sign(target[nz])[:, None], axis=0) & (c > 0)
    if signs.any():
        dist = np.abs(cols - target[:, None] * c).sum(0)
        dist[~signs] = np.inf
        j = int(np.argmin(dist))
        return int(free[j]), float(c[j])
    j = int(np.argmax(c))  # no free neuron matches in sign: the best direction
    scale = float(c[j]) if c[j] > 0 else float(np.linalg.norm(cols[:, j]) / math.sqrt(norm2))
    return int(free[j]), scale


def plant_layers(ticket: list[Layer], mother: list[Layer]) -> tuple[list[Layer], list[tuple[np.ndarray, np.ndarray]],
                                                                    np.ndarray]:
    """Algorithm 1: hide ``ticket`` in ``mother`` (changed copies are returned).

    Returns the planted mother layers, the ticket's pattern per layer (bool weight ``(in, out)``
    and bias masks, in mother coordinates) and the output scales ``c`` (the mother's output ``j``
    restricted to the ticket is ``c_j`` times the ticket's).
    """
    check(len(ticket) == len(mother), "ticket and mother network need the same number of layers")
    layers = [(w.copy(), b.copy()) for w, b in mother]
    patterns = []
    hosts = np.arange(ticket[0][0].shape[0])  # inputs host themselves
    scales = np.ones(len(hosts))
    for (tw, tb), (w, b) in zip(ticket, layers):
        check(tw.shape[1] <= w.shape[1], f"the mother layer has {w.shape[1]} units but the ticket needs {tw.shape[1]}; "
                                         "raise width")
        free = np.ones(w.shape[1], dtype=bool)
        new_hosts, new_scales = np.zeros(tw.shape[1], dtype=int), np.zeros(tw.shape[1])
        wmask, bmask = np.zeros(w.shape, dtype=bool), np.zeros(b.shape, dtype=bool)
        for i in range(tw.shape[1]):
            inputs = np.nonzero(tw[:, i])[0]
            target = np.concatenate([[tb[i]], tw[inputs, i] / scales[inputs]])
            rows = hosts[inputs]
            j, c = _host(np.vstack([b[None, :], w[rows, :]]), target, np.nonzero(free)[0])
            free[j] = False
            w[rows, j] = c * target[1:]
            b[j] = c * target[0]
            wmask[rows, j] = True
            bmask[j] = target[0] != 0
            new_hosts[i], new_scales[i] = j, c
        patterns.append((wmask, bmask))
        hosts, scales = new_hosts, new_scales
    # the outputs in the ticket's order (the mother's output columns are i.i.d., so this is a relabelling)
    w, b = layers[-1]
    order = np.concatenate([hosts, np.setdiff1d(np.arange(w.shape[1]), hosts)])
    layers[-1] = (w[:, order], b[order])
    wmask, bmask = patterns[-1]
    patterns[-1] = (wmask[:, order], bmask[order])
    return layers, patterns, scales


# ---- data -------------------------------------------------------------------------------------------

def circle_logits(r2: np.ndarray) -> np.ndarray:
    """The data's class scores (the reference's ``f``, before its softmax): the arg-max is the
    number of class boundaries below ``r2``."""
    r2 = r2[:, None]
    return 50 * np.hstack([0.1 * r2, 0.2 * r2 - 0.02, 0.4 * r2 - 0.12, 0.8 * r2 - 0.40])


def make_data(task: str, seed: int, samples: int = SAMPLES, noise: float | None = None) -> Dataset:
    """The task's data set: ``U[-1, 1]`` inputs, the paper's noise, the first 90 % for training."""
    check(task in TASKS, f"unknown planted task {task!r}; use one of {', '.join(TASKS)}")
    check(samples >= 10, f"samples must be >= 10, got {samples}")
    noise = NOISE[task] if noise is None else noise
    rng = np.random.default_rng(seeding.derive(seed, f"planted-data-{task}"))
    d_in = 2 if task == "circle" else 1
    x = rng.uniform(-1.0, 1.0, size=(samples, d_in))
    if task == "circle":
        scores = circle_logits((x ** 2).sum(1))
        ranked = np.argsort(-scores, axis=1, kind="stable")
        flip = rng.uniform(0.0, 1.0, size=samples) <= noise
        y = torch.from_numpy(np.where(flip, ranked[:, 1], ranked[:, 0])).long()
    else:
        clean = np.maximum(x, 0.0) if task == "relu" else np.hstack([f(x) for f in _helix_coordinates()])
        y = torch.from_numpy(clean + rng.normal(0.0, noise, size=clean.shape)).float()
    xt = torch.from_numpy(x).float()
    n = math.ceil(TRAIN_FRACTION * samples)
    outputs = 4 if task == "circle" else (1 if task == "relu" else 3)
    return Dataset(f"planted-{task}", xt[:n], y[:n], xt[n:], y[n:], outputs,
                   task="classification" if task == "circle" else "regression")


# ---- the planted network ----------------------------------------------------------------------------

@dataclass
class Planted:
    """A mother network with a planted ticket; see :func:`plant`."""

    task: str
    model: nn.Sequential
    """The mother network: ``Linear`` and ``ReLU`` layers with biases, the ticket planted in it."""
    ticket: Masks
    """The planted ticket as masks over the model's weights and biases (``include_bias=True`` names)."""
    data: Dataset
    ticket_metric: float
    """The ticket's test metric, evaluated as the paper does (outputs divided by ``output_scale``)."""
    output_scale: Tensor
    """Per output, the factor by which the mother restricted to the ticket scales the ticket's output."""
    target: list[tuple[Tensor, Tensor]]
    """The hand-built ticket before planting: per layer (weight ``(out, in)``, bias), float64."""
    depth: int
    width: int
    seed: int
    mother_metric: float = float("nan")
    """The unpruned mother network's test metric (the paper's evaluation)."""

    @property
    def metric_name(self) -> str:
        """``accuracy`` (circle: higher is better) or ``mse`` (relu, helix: lower is better)."""
        return metric_name(self.task)

    @property
    def ticket_density(self) -> float:
        """The ticket's share of the prunable weights and biases."""
        return self.ticket.density()


def metric_name(task: str) -> str:
    return "accuracy" if task == "circle" else "mse"


def higher_is_better(task: str) -> bool:
    return task == "circle"


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, masks: Masks | None = None, output_scale: Tensor | None = None) -> float:
    """The paper's test metric of ``model`` (with ``masks`` applied, if given): accuracy of the
    arg-max for classification; for regression the MSE after scaling each output coordinate by its
    least-squares factor on the test targets (``rescale_output``), or by ``1 / output_scale`` when
    given (how the paper scores the ticket itself)."""
    out = masked_forward(model, data.test_x, masks).double().cpu()
    if output_scale is not None:
        out = out / output_scale.double()
    y = data.test_y
    if data.task == "classification":
        return float((out.argmax(1) == y).double().mean())
    y = y.double()
    if output_scale is None:
        denom = (out * out).sum(0)
        scale = torch.where(denom > 0, (y * out).sum(0) / denom.clamp_min(1e-300), torch.ones_like(denom))
        out = out * scale
    return float(((out - y) ** 2).mean())


@torch.no_grad()
def masked_forward(model: nn.Module, x: Tensor, masks: Masks | None = None) -> Tensor:
    """``model(x)`` in eval mode with the pruned entries of ``masks`` read as zero; the model's
    weights, flags and mode are left as they are."""
    from torch.func import functional_call

    was = model.training
    model.eval()
    try:
        params = dict(model.named_parameters())
        x = x.to(next(model.parameters()).device)
        if masks is None:
            return model(x)
        swapped = {n: torch.where(m.to(params[n].device), params[n], torch.zeros((), dtype=params[n].dtype,
                                                                                  device=params[n].device))
                   for n, m in masks.items()}
        return functional_call(model, swapped, (x,))
    finally:
        model.train(was)


def _sequential(layers: list[Layer]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin] + ([nn.ReLU()] if i < len(layers) - 1 else [])
    return nn.Sequential(*mods)


def plant(task: str, *, depth: int = 5, width: int = 100, seed: int = 0) -> Planted:
    """The mother network of ``task`` (``circle``, ``relu``, ``helix``) with its ticket planted.

    ``depth`` counts the layer widths, input and output included (the paper's convention: depth 5
    is four Linear layers, three hidden layers of ``width`` units). ``seed`` fixes the mother's
    initialization and the data (separate streams). See the module docstring for what was
    compared with the reference and where we depart.
    """
    check(task in TASKS, f"unknown planted task {task!r}; use one of {', '.join(TASKS)}")
    check(isinstance(depth, int) and depth >= 3, f"depth must be an integer >= 3, got {depth!r}")
    check(isinstance(width, int) and width >= 1, f"width must be an integer >= 1, got {width!r}")
    ticket = ticket_layers(task, depth)
    widest = max(w.shape[1] for w, _ in ticket[:-1])
    check(width >= widest, f"the {task} ticket of depth {depth} has a layer of {widest} units; use width >= {widest}")
    widths = [ticket[0][0].shape[0]] + [width] * (depth - 2) + [ticket[-1][0].shape[1]]
    mother = he_init(widths, np.random.default_rng(seeding.derive(seed, f"planted-init-{task}")))
    layers, patterns, scales = plant_layers(ticket, mother)
    model = _sequential(layers)
    masks: dict[str, Tensor] = {}
    for i, (wm, bm) in enumerate(patterns):
        masks[f"{2 * i}.weight"] = torch.from_numpy(wm.T.copy())
        masks[f"{2 * i}.bias"] = torch.from_numpy(bm.copy())
    ticket_masks = Masks(masks)
    data = make_data(task, seed)
    scale = torch.from_numpy(scales.copy())
    target = [(torch.from_numpy(w.T.copy()), torch.from_numpy(b.copy())) for w, b in ticket]
    return Planted(task, model, ticket_masks, data, evaluate(model, data, ticket_masks, scale), scale, target,
                   depth, width, seed, mother_metric=evaluate(model, data))
