"""The ``palsyseg`` command line: a typer app over the library.

Every command is a thin face on a library function. Errors a user can act on
(:class:`~palsyseg.errors.PalsysegError`) become one line per problem on stderr and exit 1,
never a traceback. Heavy libraries are imported inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from palsyseg.runtime import configure_quiet_offline

app = typer.Typer(
    name="palsyseg",
    help="Face parsing and facial-paralysis segmentation: data, training, pipeline, registry, predict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    # Importing a command module registers its commands (or sub-app) on ``app``.
    import palsyseg.cli.data  # palsyseg data ...
    import palsyseg.cli.pipeline  # palsyseg pipeline ...
    import palsyseg.cli.registry  # palsyseg registry ...
    import palsyseg.cli.train  # noqa: F401  (palsyseg train, palsyseg evaluate)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: set the offline environment, run the app, turn errors into lines."""
    configure_quiet_offline()
    _register_commands()
    from palsyseg.errors import PalsysegError

    try:
        app(args=argv, prog_name="palsyseg")
    except PalsysegError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        where = exc.filename or "palsyseg"
        print(f"error: {where}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
