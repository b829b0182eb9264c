"""Exceptions that carry a decision about how the harness reports a problem.

A :class:`UserError` is a mistake the user can fix (an unknown name, a bad flag, a GPU asked for
but absent): the CLI prints it as one line and exits 2, with no traceback. The others are raised
inside a run and turn into a row of the results table instead of stopping the whole job.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit code 2."""


class TrickSkipped(Exception):
    """A trick cannot run in this setup (e.g. fp16 on a CPU); the row is marked skipped with the reason."""


class TrickFailed(Exception):
    """A trick ran but could not do its job (e.g. the LR finder found no suggestion); the row is marked failed."""


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite; the row is marked failed."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: what a row's reason or a one-line report shows."""
    return (str(error).strip().splitlines() or [""])[0]


def unknown_name_error(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UserError:
    """Build the standard 'unknown X' error: the bad value, the closest matches, where to look."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {', '.join(close)}?"
    else:
        message += f"; valid choices: {', '.join(choices) or '(none registered)'}"
    if hint:
        message += f" ({hint})"
    return UserError(message)
