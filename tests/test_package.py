"""The package (sketchprune/__init__.py): submodules as attributes, no CLI framework loaded by the library."""

import subprocess
import sys


def test_submodules_are_attributes_of_the_package():
    code = ("import sketchprune as sp, torch; sp.models.create('mlp'); sp.data.names(); "
            "sp.sketch.matmul(torch.ones(2, 3), torch.ones(3, 2), 2); print(sp.methods.names()[0])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "random", r.stderr


def test_the_library_imports_no_cli_framework():
    """typer and click load with the CLI only: every library module imports without them."""
    code = ("import importlib, pkgutil, sys\n"
            "import sketchprune\n"
            "from sketchprune import prune, select\n"
            "for name in ('pruning', 'methods', 'experiment', 'config'):\n"
            "    importlib.import_module('sketchprune.' + name)\n"
            "for info in pkgutil.walk_packages(sketchprune.__path__, 'sketchprune.'):\n"
            "    if not info.name.startswith(('sketchprune.cli', 'sketchprune.__main__')):\n"
            "        importlib.import_module(info.name)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'click'))\n"
            "assert not loaded, loaded\n"
            "import sketchprune.cli\n"
            "assert 'typer' in sys.modules  # the check can see it (this typer vendors click as typer._click)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
