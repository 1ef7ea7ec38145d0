"""Data (data/): generated sets and their cache, loaders on format-identical files, verified downloads."""

import gzip
import hashlib
import http.server
import io
import pickle
import socketserver
import struct
import tarfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sketchprune import SketchpruneError, data
from sketchprune.data import download, files


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as IDX, the format of the MNIST files: ``00 00 08 ndim``, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def png_bytes(array: np.ndarray) -> bytes:
    """A (3, H, W) uint8 array as PNG bytes (the Tiny ImageNet folders here are built with it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_generated_sets_are_deterministic_and_standardized():
    a, b = data.load("digits"), data.load("digits")
    assert torch.equal(a.train_x, b.train_x) and a.input_shape == (1, 8, 8)
    assert abs(float(a.train_x.mean())) < 1e-5
    s = data.load("synthetic")
    assert s.train_x.shape == (2000, 32) and int(s.train_y.max()) == 9


def test_mnist1d_is_generated_offline_and_cached(tmp_path):
    d = data.load("mnist1d", root=tmp_path)
    assert d.train_x.shape == (4000, 40) and d.test_x.shape == (1000, 40)
    assert _mnist1d_cache(tmp_path).exists()  # named by the generator's version
    assert torch.equal(data.load("mnist1d", root=tmp_path).train_y, d.train_y)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, (n,)), compress)
    d = data.load("mnist", root=tmp_path)
    assert d.train_x.shape == (12, 1, 28, 28) and d.test_y.shape == (5,) and d.image
    raw = files.read_idx(folder / f"train-labels-idx1-ubyte{'.gz' if compress else ''}")
    assert torch.equal(d.train_y, torch.from_numpy(raw.astype(np.int64)))


def test_truncated_idx_is_corrupt(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.zeros((3, 4, 4), dtype=np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(SketchpruneError, match="corrupt"):
        files.read_idx(p)


def _cifar_batch(path, n, label_key, seed):
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key: [int(v) for v in rng.integers(0, 10, n)]}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def test_cifar10_and_cifar100_batches(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batches = [_cifar_batch(base / f"data_batch_{i}", 4, b"labels", i) for i in range(1, 6)]
    _cifar_batch(base / "test_batch", 3, b"labels", 9)
    d = data.load("cifar10", root=tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (3, 3, 32, 32)
    assert d.train_y.tolist()[:4] == batches[0][b"labels"]
    base100 = tmp_path / "cifar-100-python"
    base100.mkdir()
    _cifar_batch(base100 / "train", 6, b"fine_labels", 1)
    _cifar_batch(base100 / "test", 2, b"fine_labels", 2)
    d = data.load("cifar100", root=tmp_path)
    assert d.num_classes == 100 and d.train_x.shape == (6, 3, 32, 32)


def test_cifar_batch_with_code_is_refused(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (base / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(SketchpruneError, match="corrupt"):
        files.read_cifar_batch(base / "data_batch_1", b"labels")


def test_tiny_imagenet_folder(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for w in wnids:
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            (base / "train" / w / "images" / f"{w}_{i}.JPEG").write_bytes(
                png_bytes(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)))
    lines = []
    for i, w in enumerate(["n02", "n01", "n02"]):
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(
            png_bytes(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    d = data.load("tiny-imagenet", root=tmp_path)
    assert d.train_x.shape == (4, 3, 64, 64) and d.test_y.tolist() == [1, 0, 1] and d.num_classes == 200


@pytest.mark.parametrize("name", ["mnist", "cifar10", "tiny-imagenet"])
def test_missing_files_name_the_fix(tmp_path, name):
    with pytest.raises(SketchpruneError) as e:
        data.load(name, root=tmp_path)
    msg = str(e.value)
    assert "--data-root" in msg and "SKETCHPRUNE_DATA" in msg and "--download" in msg


def test_unknown_dataset_lists_known():
    with pytest.raises(SketchpruneError, match="known datasets: .*mnist1d"):
        data.load("imagenet22k")


# ---- downloads against a real HTTP server on 127.0.0.1 -----------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    payloads: dict = {}

    def do_GET(self):  # noqa: N802
        body, cut = self.payloads[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut] if cut else body)
        if cut:
            self.wfile.flush()
            self.connection.close()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = socketserver.TCPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler.payloads
    srv.shutdown()
    srv.server_close()


def _cifar_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 2)]:
            rng = np.random.default_rng(n)
            blob = pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [1] * n},
                                protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def test_download_verifies_and_extracts(server, tmp_path):
    url, payloads = server
    body = _cifar_archive()
    payloads["/c.tar.gz"] = (body, 0)
    remote = download.Remote(f"{url}/c.tar.gz", "c.tar.gz", "sha256:" + hashlib.sha256(body).hexdigest())
    path = download.fetch(remote, tmp_path)
    files.extract_tar(path, tmp_path)
    xtr, ytr, xte, yte = files.read_cifar(tmp_path, 10)
    assert xtr.shape == (10, 3, 32, 32) and yte.tolist() == [1, 1]
    assert download.fetch(remote, tmp_path) == path  # verified copy in place: not fetched again


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    url, payloads = server
    payloads["/f"] = (b"hello world" * 100, 0)
    with pytest.raises(SketchpruneError, match="checksum mismatch"):
        download.fetch(download.Remote(f"{url}/f", "f.bin", "sha256:" + "0" * 64), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_server_closing_early_keeps_nothing(server, tmp_path):
    url, payloads = server
    body = b"x" * 100_000
    payloads["/short"] = (body, 1000)
    with pytest.raises(SketchpruneError, match="cut short|failed"):
        download.fetch(download.Remote(f"{url}/short", "s.bin", "sha256:" + hashlib.sha256(body).hexdigest()),
                       tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_mnist1d_cache_is_generated_again(tmp_path):
    first = data.load("mnist1d", root=tmp_path)
    cache = _mnist1d_cache(tmp_path)
    cache.write_bytes(cache.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="damaged; generating it again"):
        again = data.load("mnist1d", root=tmp_path)
    assert torch.equal(first.train_x, again.train_x)
    assert np.load(cache)["x"].shape[0] == len(first.train_y)  # the cache is whole again


def _mnist1d_cache(root, suffix=""):
    """The MNIST-1D cache file under ``root``: its name carries the generator's version."""
    import importlib.metadata

    return root / f"mnist1d-{importlib.metadata.version('mnist1d')}{suffix}.npz"


def _rewrite(path, **changes):
    arrays = dict(np.load(path))
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage", [
    lambda a: {"x": a["x"][:, :39]},  # wrong feature count
    lambda a: {"x": a["x"][:-5]},  # wrong lengths
    lambda a: {"y_test": a["y_test"][:-1]},
    lambda a: {"y": a["y"] + 3},  # labels outside 0-9
    lambda a: {"y": a["y"].astype(np.float32)},  # labels that are not integers
    lambda a: {"x_test": np.full_like(a["x_test"], np.nan)},
    lambda a: {"x": a["x"][:, :, None]},
])
def test_a_mnist1d_cache_that_is_not_the_generators_is_generated_again(damage, tmp_path):
    first = data.load("mnist1d", root=tmp_path, samples=200)
    cache = _mnist1d_cache(tmp_path, "-200-0.8")
    _rewrite(cache, **damage(dict(np.load(cache))))
    with pytest.warns(RuntimeWarning, match="generating it again"):
        again = data.load("mnist1d", root=tmp_path, samples=200)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    assert again.train_x.shape == (160, 40) and again.test_x.shape == (40, 40)
    assert again.train_y.dtype == torch.int64 and int(again.train_y.max()) <= 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache is whole again: read with no warning
        data.load("mnist1d", root=tmp_path, samples=200)


def test_a_mnist1d_cache_of_another_generator_version_is_not_read(tmp_path, monkeypatch):
    import importlib.metadata

    data.load("mnist1d", root=tmp_path, samples=100)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9" if name == "mnist1d" else real(name))
    data.load("mnist1d", root=tmp_path, samples=100)
    assert (tmp_path / "mnist1d-9.9-100-0.8.npz").exists() and _mnist1d_cache(tmp_path, "-100-0.8").exists()
