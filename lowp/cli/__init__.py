"""The ``lowp`` command line. Each subcommand lives in its own module exposing ``register(subparsers)``;
bad input ends with a one-line ``lowp: error: ...`` message and exit status 2."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order --help lists them
COMMANDS = ["formats", "ptq", "recipes", "accum_bits", "compare", "report", "coverage"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``lowp ptq: error: argument --asymmetric: ...``), exit status 2; subcommand
    parsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message.splitlines()[0] if message else 'bad arguments'} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lowp", description="Reduced-precision deep learning on PyTorch.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lowp.cli.{name}").register(sub)
    return p


def _interrupt_in(e: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the causes of ``e`` (Python wraps one raised in some places, e.g. as
    the RuntimeError of a failed ``__set_name__``)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        try:
            return int(args.func(args) or 0)
        except Exception as e:  # Ctrl-C inside code that wraps it (a class's __set_name__ while matplotlib imports)
            if _interrupt_in(e):
                raise KeyboardInterrupt from e
            raise
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RecursionError:
        print("lowp: error: input nested too deeply", file=sys.stderr)
        return 2
    except (CLIError, ValueError, TypeError, FileNotFoundError, PermissionError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"lowp: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
