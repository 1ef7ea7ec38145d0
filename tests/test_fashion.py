"""Fashion-MNIST offline (Debian's dataset-fashion-mnist package) and the models on 1x28x28 inputs."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch

from sketchprune import SketchpruneError, data, models
from sketchprune.train import TrainConfig, train

SYSTEM = data.SYSTEM_FOLDERS["fashion-mnist"][0]
installed = pytest.mark.skipif(
    not SYSTEM.is_dir() and not os.environ.get("SKETCHPRUNE_REQUIRE_FASHION_MNIST"),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist; .ci/run does)")


def idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzipped IDX file."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def tiny_copy(folder, train: int, test: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("t10k", test)):
        idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)


@installed
def test_fashion_mnist_loads_from_the_debian_package_when_the_root_has_none(tmp_path):
    d = data.load("fashion-mnist", root=tmp_path)  # an empty data root: the package's files
    assert (len(d.train_y), len(d.test_y), d.input_shape, d.num_classes, d.image) == (60000, 10000, (1, 28, 28), 10,
                                                                                     True)
    assert torch.bincount(d.train_y).tolist() == [6000] * 10  # Fashion-MNIST's classes are balanced
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    assert abs(float(d.train_x.mean())) < 1e-4 and abs(float(d.train_x.std()) - 1) < 1e-3  # standardized


def test_files_under_the_data_root_win(tmp_path):
    tiny_copy(tmp_path / "fashion-mnist", 30, 20)
    d = data.load("fashion-mnist", root=tmp_path)
    assert (len(d.train_y), len(d.test_y)) == (30, 20)
    assert d.train_y[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_the_package_folder_is_read_when_the_root_has_none(tmp_path, monkeypatch):
    tiny_copy(tmp_path / "system", 40, 10)
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", (tmp_path / "system", "dataset-fashion-mnist"))
    d = data.load("fashion-mnist", root=tmp_path / "empty")
    assert (len(d.train_y), len(d.test_y)) == (40, 10)


def test_without_the_package_the_error_names_apt_and_download(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SYSTEM_FOLDERS, "fashion-mnist", (tmp_path / "none", "dataset-fashion-mnist"))
    with pytest.raises(SketchpruneError) as e:
        data.load("fashion-mnist", root=tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    assert str(tmp_path / "fashion-mnist") in message


@installed
def test_a_conv_net_learns_fashion_mnist_in_one_epoch_on_a_slice():
    full = data.load("fashion-mnist")
    part = data.Dataset("fashion-mnist", full.train_x[:3000], full.train_y[:3000], full.test_x[:1000],
                        full.test_y[:1000], 10, image=True)
    torch.manual_seed(0)
    net = models.create("lenet5", input_shape=part.input_shape)
    result = train(net, part, TrainConfig(epochs=1, optimizer="adam", lr=3e-3, weight_decay=0.0, batch_size=64))
    assert result["final_test_acc"] > 0.5  # chance is 0.1


@pytest.mark.parametrize("name", ["mlp", "conv", "lenet5", "vgg11", "vgg11_bn", "vgg16_bn", "resnet20", "resnet32",
                                  "wrn"])
def test_models_take_28x28_grey_images(name):
    torch.manual_seed(0)
    opts = {"width": 0.25} if name.startswith("vgg") else {"width": 1} if name == "wrn" else {}
    net = models.create(name, input_shape=(1, 28, 28), **opts)
    out = net(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert net.input_shape == (1, 28, 28)
