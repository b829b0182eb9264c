"""``python -m harness``: list | run | resume | report | compare | parity | predict | export. One module per subcommand under commands/.

A UserError anywhere becomes one line on stderr and exit code 2, and so does a file-system error (a full
disk, a read-only folder, an ``--out`` that is a file), which names the path and the cause; ``run`` exits
1 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

from harness import __version__
from harness.commands import COMMANDS
from harness.errors import UserError, os_error_line


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag or value is one line and exit 2, as every other user error here.

    argparse's own ``error`` prints the whole usage (20 lines for ``run``) before the message; the
    message already names the flag and the value, and ``--help`` is one command away.
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("python -m harness").strip()
        self.exit(2, f"harness: error: {command + ': ' if command else ''}{message} (see --help)\n")


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand an argv names, if any: its first word that is not an option.

    The top-level parser takes no option with a value (only --help and --version), so the first
    non-option word is the subcommand (or a typo of one, which argparse then refuses).
    """
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(only: str | None = None, *, everything: bool = True) -> argparse.ArgumentParser:
    """The parser, with every subcommand's arguments, or (``everything=False``) only those of ``only``.

    The other subcommands get their name and help alone, which is all ``--help`` and a typo need:
    a subcommand's module is imported only to add its arguments, and most import torch and Lightning
    (seconds), so ``python -m harness --help`` or ``lsit`` answers at once and ``run`` imports only run.
    """
    parser = OneLineParser(
        prog="python -m harness",
        description="Measure what PyTorch Lightning training tricks do to throughput, memory and loss.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if everything or command.name == only:
            module = importlib.import_module(command.module)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.main)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """While a command runs, SIGTERM raises KeyboardInterrupt, as Ctrl-C does.

    SIGTERM's default would end the parent at once: the worker's row lost with no word, and (before
    the worker noticed) the worker left running. As an interrupt it stops the same way Ctrl-C does:
    the worker is killed, finished rows stay, "interrupted", exit 130. Only the main thread may set
    a handler (``main`` called from another thread leaves SIGTERM alone); the old one is restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(chosen_command(argv), everything=False).parse_args(argv)
    try:
        with sigterm_as_ctrl_c():
            return int(args.handler(args) or 0)
    except UserError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m harness list | head`: the reader left; nothing to say, nowhere to say it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would raise again
        return 1
    except OSError as error:  # a full disk, a read-only folder, an --out that is a file: the path and the cause
        print(f"harness: error: {os_error_line(error)}", file=sys.stderr)
        return 2
