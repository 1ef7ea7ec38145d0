"""Settings (config.py): pinned run hashes, only non-defaults hashed, every setting a train flag and a sweep key."""

import dataclasses
import re
import subprocess
import sys

import pytest

from sketchprune import methods
from sketchprune.config import config_hash, non_default
from sketchprune.experiment import RunConfig, make_config
from sketchprune.train import TrainConfig


def test_pinned_hashes():
    # run folders are named by these: changing them orphans every existing result
    assert config_hash(RunConfig()) == "a49c17bef0e9"
    assert config_hash(RunConfig(method="synflow", density=0.01, mode="sample")) == "ebd8308c6cf5"
    assert config_hash(RunConfig(train=TrainConfig(epochs=3))) == "ed1787f5bb43"
    assert config_hash(RunConfig(model="vgg16_bn", dataset="cifar10", seed=2)) == "eb9a012f239c"


def test_only_non_default_settings_enter_the_hash():
    cfg = RunConfig(train=TrainConfig(epochs=3))
    assert non_default(cfg) == {"train": {"epochs": 3}}  # nested settings compared field by field
    assert make_config({"compression": 10, "train.epochs": 3}).density == pytest.approx(0.1)


def test_every_setting_and_option_is_a_train_flag_and_a_sweep_key():
    out = subprocess.run([sys.executable, "-m", "sketchprune.cli", "train", "--help"], capture_output=True,
                         text=True, env={"COLUMNS": "200", "PATH": ""}).stdout
    flags = set(re.findall(r"--([a-z0-9-]+)", out))
    settings = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("train", "method_options")]
    settings += [f.name for f in dataclasses.fields(TrainConfig)]
    options = {name: methods.get(name).defaults() for name in methods.names()}
    for name in settings + [o for opts in options.values() for o in opts]:
        assert name.replace("_", "-") in flags, f"--{name} is not a flag of train"
    for f in dataclasses.fields(RunConfig):  # every field is a sweep key (its default value round-trips)
        if f.name != "train":
            assert make_config({f.name: getattr(RunConfig(), f.name)}) == RunConfig()
    for f in dataclasses.fields(TrainConfig):
        assert make_config({f"train.{f.name}": getattr(TrainConfig(), f.name)}) == RunConfig()
    for method, opts in options.items():
        for key, value in opts.items():
            if methods.get(method).kind == "update":  # a DST updater's option goes with dst=, not method=
                assert make_config({"dst": method, key: value}) == RunConfig(dst=method)
            else:
                assert make_config({"method": method, key: value}) == RunConfig(method=method)
