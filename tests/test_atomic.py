"""Atomic files: the old file or the new one, never half; the umask's mode; safetensors bytes from the contents only."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sketchprune import Masks, SketchpruneError
from sketchprune.atomic import atomic_path, read_safetensors, write_safetensors, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_safetensors_files_are_byte_reproducible(tmp_path):
    tensors = {"b.weight": torch.ones(3, 2), "a.weight": torch.zeros(4, dtype=torch.bool), "c": torch.arange(5)}
    meta = {"zeta": "1", "alpha": "2", "mid": '{"x": 1}', "beta": "3"}
    paths = [write_safetensors(tmp_path / f"t{i}.safetensors", tensors, meta) for i in range(6)]
    assert len({sha256(p) for p in paths}) == 1  # safetensors alone writes its metadata in a varying order
    back, got_meta = read_safetensors(paths[0], fix="write it again")
    assert got_meta == meta and set(back) == set(tensors)
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())
    masks = Masks({"0.weight": torch.rand(8, 8) > 0.5, "2.weight": torch.rand(3, 8) > 0.5}, meta={"seed": 3})
    saved = [masks.save(tmp_path / f"m{i}.safetensors") for i in range(6)]
    assert len({sha256(p) for p in saved}) == 1
    again = Masks.load(saved[0])
    assert again.meta == {"seed": 3} and all(torch.equal(again[k], masks[k]) for k in masks)


def test_a_damaged_safetensors_file_is_a_one_line_error_naming_it(tmp_path, one_line_error):
    bad = tmp_path / "start.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(SketchpruneError) as e:
        read_safetensors(bad, what="start weights", fix="delete the run folder to start over")
    assert one_line_error(e).startswith(f"start weights {bad} is corrupt") and "delete the run folder" in str(e.value)


UMASK_CHECK = """
import os, sys
os.umask(0o027)
def refuse(*args):
    raise AssertionError("the library changed the umask")
os.umask = refuse
import torch
from sketchprune.atomic import write_json, write_safetensors, write_text
from sketchprune import Masks
out = sys.argv[1]
paths = [write_json(out + "/a.json", {}), write_text(out + "/b.txt", "x"),
         write_safetensors(out + "/c.safetensors", {"t": torch.ones(2)}),
         Masks({"w": torch.ones(2, dtype=torch.bool)}).save(out + "/d.safetensors")]
print(" ".join(oct(os.stat(p).st_mode & 0o777) for p in paths))
"""


def test_atomic_files_get_the_umask_mode_and_the_umask_is_never_touched(tmp_path):
    r = subprocess.run([sys.executable, "-c", UMASK_CHECK, str(tmp_path)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["0o640"] * 4  # 0666 less the umask 027, like any new file
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
