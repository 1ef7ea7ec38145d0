"""The ``sketchprune`` command line. Each command is a thin shell around a library function.

Every command takes ``--out DIR`` (where its files go) and ``--json`` (print the result as one
JSON object on stdout instead of tables). Bad input exits with status 2 and a one-line
``error: ...`` that names the fix.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from sketchprune import __version__
from sketchprune import config as cfgmod
from sketchprune.errors import SketchpruneError
from sketchprune.results import format_table, to_json, write_json

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Pruning at initialization, seen as sketching for approximate matrix multiplication.",
    pretty_exceptions_enable=False,
)
theory_app = typer.Typer(no_args_is_help=True, help="Theory lab: check each claim of the paper (E1-E4, E6).")
app.add_typer(theory_app, name="theory")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sketchprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """sketchprune command line."""


def out_json_params(default_out: str) -> list[inspect.Parameter]:
    """The ``--out`` and ``--json`` options every command takes."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("out", kw, default=typer.Option(Path(default_out), "--out", help="Output folder."),
                          annotation=Path),
        inspect.Parameter("as_json", kw, default=typer.Option(False, "--json", help="Print the result as one JSON object."),
                          annotation=bool),
    ]


def emit(result: dict[str, Any], as_json: bool, tables: list[tuple[str, list[dict], Optional[list[str]]]],
         files: dict[str, Path]) -> None:
    """Print ``result`` as JSON, or its tables followed by the files written."""
    result = {**result, "files": {k: str(v) for k, v in files.items()}}
    if as_json:
        typer.echo(to_json(result))
        return
    for title, rows, columns in tables:
        if title:
            typer.echo(f"\n{title}")
        typer.echo(format_table(rows, columns))
    for what, path in files.items():
        typer.echo(f"{what}: {path}")


def theory_command(name: str, module: Any, cls: type, help: str, tables: Callable[[dict], list]) -> None:
    """Register ``sketchprune theory NAME``: run, write JSON and PNG under --out, print tables."""

    @cfgmod.command(theory_app, name, cls, out_json_params(f"runs/theory-{name}"), help)
    def _cmd(config: Any, out: Path, as_json: bool) -> None:
        result = module.run(config)
        files = {"json": write_json(out / f"{name}.json", result), "plot": module.plot(result, out / f"{name}.png")}
        emit(result, as_json, tables(result), files)


def _register_theory() -> None:
    from sketchprune.theory import sketch as e1

    theory_command(
        "sketch", e1, e1.SketchConfig,
        "E1: Monte Carlo sketch error vs the exact formulas (uniform / optimal / B-only; iid / poisson / exact-k).",
        lambda r: [("E1: mean squared error (99% CI) vs exact formula", r["rows"], e1.TABLE_COLUMNS),
                   ("error ratios", r["ratios"], None)],
    )


_register_theory()


@app.command("run")
def run_default(
    out: Path = typer.Option(Path("runs/default"), "--out", help="Output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """The default job: a small, real comparison that runs on a CPU in about a minute."""
    from sketchprune.theory import sketch as e1

    cfg = e1.SketchConfig(trials=200)
    result = e1.run(cfg)
    files = {"json": write_json(out / "sketch.json", result), "plot": e1.plot(result, out / "sketch.png")}
    emit(result, as_json, [("E1: mean squared error (99% CI) vs exact formula", result["rows"], e1.TABLE_COLUMNS)],
         files)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning bad input into a one-line error (exit 2)."""
    try:
        app(args=argv, standalone_mode=False)
    except SketchpruneError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            typer.echo(f"error: {e.format_message()}", err=True)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
