"""The ``palsyseg`` command line: a typer app over the library.

Every command is a thin face on a library function. Errors a user can act on
(:class:`~palsyseg.errors.PalsysegError`) become one line per problem on stderr and exit 1;
so do MLflow, S3 and network errors (:func:`palsyseg.connectivity.describe_error`) and, with
a hint, anything unexpected. ``palsyseg --debug COMMAND`` (or ``PALSYSEG_DEBUG=1``) shows the
traceback instead. Heavy libraries are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from palsyseg.runtime import configure_bounded_network, configure_quiet_offline

app = typer.Typer(
    name="palsyseg",
    help="Face parsing and facial-paralysis segmentation: data, training, pipeline, registry, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_options: dict[str, bool] = {"debug": False}


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="On an error, show the full traceback instead of one line."),
    ] = False,
) -> None:
    # Typer(help=...) above is the app's description; this only records the global options.
    if debug:  # PALSYSEG_DEBUG=1 (read in main) counts as well
        _options["debug"] = True


def _register_commands() -> None:
    # Importing a command module registers its commands (or sub-app) on ``app``.
    import palsyseg.cli.data  # palsyseg data ...
    import palsyseg.cli.pipeline  # palsyseg pipeline ...
    import palsyseg.cli.predict  # palsyseg predict
    import palsyseg.cli.registry  # palsyseg registry ...
    import palsyseg.cli.train  # noqa: F401  (palsyseg train, palsyseg evaluate)


def _flags_without_values(command: Any) -> None:
    """Show boolean flags as flags: typer's rich help prints ``<bool>`` after them, as if
    ``--force`` took a value. An empty metavar shows nothing."""
    params = list(getattr(command, "params", []))
    help_option = command.get_help_option(typer.Context(command))  # made (and cached) on demand
    for param in [*params, *([help_option] if help_option is not None else [])]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_without_values(sub)


def _fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: set the environment, run the app, turn errors into lines."""
    configure_quiet_offline()
    configure_bounded_network()
    _register_commands()
    from palsyseg.connectivity import describe_error
    from palsyseg.errors import PalsysegError

    _options["debug"] = os.environ.get("PALSYSEG_DEBUG", "") not in ("", "0")
    command = typer.main.get_command(app)
    _flags_without_values(command)
    try:
        command(args=argv, prog_name="palsyseg")
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        if _options["debug"]:
            raise
        if isinstance(exc, PalsysegError):
            for line in exc.lines():
                print(f"error: {line}", file=sys.stderr)
            raise SystemExit(1) from None
        described = describe_error(exc)
        if described is not None:
            _fail(described)
        if isinstance(exc, OSError):
            where = exc.filename or "palsyseg"
            _fail(f"{where}: {exc.strerror or exc}")
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        _fail(
            f"unexpected {type(exc).__name__}"
            + (f": {first[:300]}" if first else "")
            + " (rerun as `palsyseg --debug ...` for the traceback)"
        )
