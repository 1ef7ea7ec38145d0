"""The method registry: one registration reaches prune(), the CLI, sweeps, the README and plugins."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sketchprune import SketchpruneError, methods, prune
from sketchprune.config import config_hash, help_of, non_default, setting
from sketchprune.experiment import make_config
from sketchprune.methods import registry

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = [n for n in methods.names() if methods.get(n).source == "sketchprune"]


def test_every_builtin_method_describes_itself():
    assert set(BUILTIN) <= set(methods.names())
    for name in BUILTIN:
        m = methods.get(name)
        assert m.description.strip() and m.kind in (*registry.KINDS, "update") and m.data in registry.DATA \
            and m.forms  # update: the DST updaters' runner (sketchprune.dst)
        assert dataclasses.is_dataclass(m.options) and m.options.__dataclass_params__.frozen
        for f in m.option_fields():
            assert help_of(f), f"{name}.{f.name} has no help line"
            assert registry.option_owner(f.name) == name
    with pytest.raises(SketchpruneError, match="known methods: random, magnitude"):
        methods.get("best")


def test_registration_errors_name_the_fix(scratch_registry):
    @dataclasses.dataclass(frozen=True)
    class Clash:
        grasp_temperature: float = 1.0

    @dataclasses.dataclass(frozen=True)
    class Reserved:
        density: float = 1.0

    @dataclasses.dataclass
    class Mutable:
        x_y: int = 1

    def fn(ctx):
        return {}

    cases = [
        (dict(name="magnitude", description="d"), "registered already"),
        (dict(name="Bad-Name", description="d"), "lower-case identifier"),
        (dict(name="x", description=""), "citation"),
        (dict(name="x", description="d", kind="other"), "kind must be"),
        (dict(name="x", description="d", options=Clash), "option of method 'grasp' already"),
        (dict(name="x", description="d", options=Reserved), "a setting of"),
        (dict(name="x", description="d", options=Mutable), "frozen dataclass"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(SketchpruneError, match=msg):
            methods.register(**kwargs)(fn)
    assert "x" not in methods.names()


def test_a_method_registered_once_works_in_prune_with_its_option(scratch_registry):
    @dataclasses.dataclass(frozen=True)
    class LayerPower:
        layer_power_exponent: float = setting(1.0, "Exponent of |theta|.")

    @methods.register("layer_power", options=LayerPower, description="|theta|^p (test)")
    def layer_power(ctx):
        return {n: p.detach().abs() ** ctx.options.layer_power_exponent for n, p in ctx.params.items()}

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    # the option reaches the scorer: |theta|^3 sampled at power 1 is |theta| sampled at power 3, not at power 1
    a = prune(net, "layer_power", 0.2, mode="sample", layer_power_exponent=3.0)
    b = prune(net, "magnitude", 0.2, mode="sample", power=3.0)
    c = prune(net, "layer_power", 0.2, mode="sample")
    assert all(torch.equal(a[n], b[n]) for n in a) and not all(torch.equal(a[n], c[n]) for n in a)
    with pytest.raises(SketchpruneError, match="layer_power_exponent' must be float"):
        prune(net, "layer_power", 0.2, layer_power_exponent="big")
    with pytest.raises(SketchpruneError, match="unknown prune option 'layer_power_exp'.*layer_power_exponent"):
        prune(net, "layer_power", 0.2, layer_power_exp=3.0)
    with pytest.raises(SketchpruneError, match="belongs to method 'layer_power', not 'magnitude'"):
        prune(net, "magnitude", 0.2, layer_power_exponent=3.0)
    # settings and run hashes: the option counts only when it is not the default
    at_default = make_config({"method": "layer_power", "layer_power_exponent": 1.0})
    assert non_default(at_default) == {"method": "layer_power"}
    cfg = make_config({"method": "layer_power", "layer_power_exponent": 2})
    assert cfg.method_options == {"layer_power_exponent": 2.0} and config_hash(cfg) != config_hash(at_default)


def test_readme_methods_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- methods:start -->\n(.*?)<!-- methods:end -->", readme, re.S)
    assert block, "README.md lacks the generated methods table (sketchprune methods --markdown)"
    from sketchprune.cli import vgg16_costs

    costs = vgg16_costs(ROOT / "benchmarks" / "results" / "prune.json")  # the committed measurement
    assert block.group(1) == methods.markdown_table(lambda m: m.source == "sketchprune", costs=costs)


# ---- plugins: examples/plugin installed into this environment ------------------------------------

PLUGIN_CHECK = """
import json, torch
from torch import nn
from sketchprune import methods, prune
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
m0 = prune(net, "noisy_magnitude", 0.2, noisy_magnitude_sigma=0.0)
mag = prune(net, "magnitude", 0.2)
a = prune(net, "noisy_magnitude", 0.2, noisy_magnitude_sigma=2.0, seed=1)
b = prune(net, "noisy_magnitude", 0.2, noisy_magnitude_sigma=2.0, seed=1)
print(json.dumps({"listed": "noisy_magnitude" in methods.names(), "source": methods.get("noisy_magnitude").source,
                  "sigma0_is_magnitude": all(torch.equal(m0[n], mag[n]) for n in mag),
                  "noise_changes_it": any(not torch.equal(a[n], mag[n]) for n in mag),
                  "same_seed_same_mask": all(torch.equal(a[n], b[n]) for n in a),
                  "kept": sum(k for k, _ in a.counts().values()), "total": sum(t for _, t in a.counts().values())}))
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin") / "plugin"
    shutil.copytree(ROOT / "examples" / "plugin", src)  # build outside the repository
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    yield
    subprocess.run(pip + ["uninstall", "-y", "sketchprune-noisy-magnitude"], capture_output=True)


def test_plugin_method_from_prune(plugin):
    r = subprocess.run([sys.executable, "-c", PLUGIN_CHECK], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["listed"] and got["source"].startswith("plugin noisy_magnitude")
    assert got["sigma0_is_magnitude"] and got["noise_changes_it"] and got["same_seed_same_mask"]
    assert got["kept"] == round(0.2 * got["total"])


def test_plugin_method_from_the_cli_and_a_sweep(plugin, tmp_path):
    cli = [sys.executable, "-m", "sketchprune.cli"]
    base = ["--model", "mlp", "--dataset", "digits", "--density", "0.2", "--json"]
    plug = subprocess.run(cli + ["prune", "--method", "noisy_magnitude", "--noisy-magnitude-sigma", "0",
                                 "--out", str(tmp_path / "p")] + base, capture_output=True, text=True)
    mag = subprocess.run(cli + ["prune", "--method", "magnitude", "--out", str(tmp_path / "m")] + base,
                         capture_output=True, text=True)
    assert plug.returncode == 0 and mag.returncode == 0, plug.stderr + mag.stderr
    assert [r["kept"] for r in json.loads(plug.stdout)["layers"]] == [r["kept"] for r in json.loads(mag.stdout)["layers"]]
    listed = subprocess.run(cli + ["methods", "--json"], capture_output=True, text=True)
    assert "noisy_magnitude" in [m["method"] for m in json.loads(listed.stdout)["methods"]]
    sweep = tmp_path / "s.yaml"
    sweep.write_text("fixed: {model: mlp, dataset: digits, model_options: {width: 16}, method: noisy_magnitude,\n"
                     "        train: {epochs: 1, optimizer: adam, lr: 0.003, weight_decay: 0.0}}\n"
                     "grid: {noisy_magnitude_sigma: [0.5, 2.0]}\n")
    r = subprocess.run(cli + ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["done"] == 2, r.stderr
    configs = [json.loads(p.read_text()) for p in (tmp_path / "sw").rglob("config.json")]
    # 0.5 is the default: it stays out of the settings (and the hash); 2.0 is recorded
    assert sorted(json.dumps(c["method_options"]) for c in configs) == ['{"noisy_magnitude_sigma": 2.0}', "{}"]
