"""`gradwatch`: the one command line. It composes the trainer's commands (train, presets, lesson,
inspect, diagnose) with the dashboard's (ui, export), so neither side imports the other's CLI.

Bad input ends with one line on stderr and exit 2; an unexpected error with one line and exit 1
(GRADWATCH_DEBUG=1 prints the traceback); Ctrl-C exits 130.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

from ._version import __version__
from .trainer import cli as trainer_cli

PROG = trainer_cli.PROG


def build_parser() -> trainer_cli.CommandParser:
    from .dashboard import cli as dashboard_cli

    parser = trainer_cli.CommandParser(
        prog=PROG, allow_abbrev=False,
        description="gradwatch: per-layer training diagnostics for PyTorch, a live dashboard and automatic "
                    "diagnosis. `gradwatch COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"gradwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=trainer_cli.CommandParser)
    commands.required = True
    trainer_cli.add_commands(commands)
    dashboard_cli.add_commands(commands)
    return parser


def _commands() -> dict:
    from .dashboard import cli as dashboard_cli

    return {**trainer_cli.COMMANDS, **dashboard_cli.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command == "train":
            raise trainer_cli.UsageError(f"{PROG} train: {trainer_cli.unknown_flags_message(unknown)}")
        if unknown:
            raise trainer_cli.UsageError(f"{PROG} {args.command}: error: unrecognized arguments: {' '.join(unknown)}")
        return _commands()[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return trainer_cli.EXIT_STOPPED
    except BrokenPipeError:
        # The reader went away (`gradwatch diagnose --json | head`): what it wanted was printed.
        # Point stdout at /dev/null so the interpreter's final flush does not fail a second time.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return trainer_cli.EXIT_OK
    except Exception as exc:
        if isinstance(exc, trainer_cli.bad_input_errors()):
            message = " ".join(str(exc).split())
            prefix = "" if message.startswith(PROG) else f"{PROG}: error: "
            print(f"{prefix}{message}", file=sys.stderr)
            return trainer_cli.EXIT_USAGE
        if os.environ.get("GRADWATCH_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
              "(set GRADWATCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return trainer_cli.EXIT_FAILED
