"""The `skillfactory` command line: a registry of commands, one module each.

Every module in this package that defines `register(app)` adds its command(s) to the app. Commands
import heavy libraries (torch, transformers) inside their functions, so `--help` and `validate`
answer fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="skillfactory",
    help="Turn a base model into one that verifies and retries its own answers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Turn a base model into one that verifies and retries its own answers."""


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
