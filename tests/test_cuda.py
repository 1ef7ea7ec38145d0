"""The GPU path (run by benchmarks/gpu_check.sh; skipped without CUDA): the same guarantees on the device."""

import pytest
import torch
import torch.nn.functional as F

from sketchprune import methods, models, prune, select
from sketchprune.pruning import prune_units

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_select_on_the_device_keeps_exact_counts_and_the_seed():
    s = torch.rand(1_000_000, device="cuda")
    assert int(select(s, 0.01).sum()) == 10_000
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    a, b = (select(s, 0.01, mode="sample", generator=g()) for _ in range(2))
    assert int(a.sum()) == 10_000 and torch.equal(a, b)


@pytest.mark.parametrize("method", ["synflow", "snip", "grasp", "magnitude"])
def test_prune_on_the_device(method):
    torch.manual_seed(0)
    model = models.create("resnet20").cuda()
    x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    m = prune(model, method, 0.05, data=[(x, y)], iterations=5 if method == "synflow" else None)
    assert sum(k for k, _ in m.counts().values()) == round(0.05 * sum(t for _, t in m.counts().values()))


def test_masked_training_on_the_device_keeps_exact_zeros():
    torch.manual_seed(0)
    model = models.create("resnet20").cuda()
    masks = prune(model, "magnitude", 0.1)
    handle = masks.apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(5):
        x, y = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    assert all(bool((params[n][~m.cuda()] == 0).all()) for n, m in masks.items())
    handle.remove()


@pytest.mark.parametrize("method", methods.names("units"))
def test_structured_pruning_on_the_device(method):
    torch.manual_seed(0)
    model = models.create("vgg16_bn").cuda()
    data = [(torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))]
    small = prune_units(model, method, 0.5, mode="sample", data=data, seed=1)
    again = prune_units(model, method, 0.5, mode="sample", data=data, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(small.state_dict().values(), again.state_dict().values()))
    assert small(torch.randn(2, 3, 32, 32, device="cuda")).shape == (2, 10)


def test_two_four_projection_runs_semi_structured():
    from torch.sparse import to_sparse_semi_structured

    from sketchprune.nm import nm_mask

    w = torch.randn(128, 128, device="cuda", dtype=torch.float16)
    keep = nm_mask(w.abs(), 2, 4)
    assert int(keep.view(128, -1, 4).sum(2).max()) == 2
    x = torch.randn(128, 64, device="cuda", dtype=torch.float16)
    dense = (w * keep) @ x
    assert torch.allclose(to_sparse_semi_structured(w * keep) @ x, dense, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("method", [n for n in methods.names("weights") if not methods.get(n).runner.needs_trainer])
def test_every_method_prunes_on_the_device_with_exact_counts_and_the_seed(method):
    torch.manual_seed(0)
    model = models.create("resnet20").cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator(device="cuda").manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32, device="cuda", generator=g),
                torch.randint(0, 10, (16,), device="cuda", generator=g)) for _ in range(2)]
    mode = "sample" if methods.get(method).runner.gives_scores else "topk"
    run = lambda: prune(model, method, 0.05, mode=mode, data=batches, seed=3)  # noqa: E731
    a, b = run(), run()
    counts = a.counts().values()
    assert sum(k for k, _ in counts) == round(0.05 * sum(t for _, t in counts))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "pruning changed the model"
