"""Text from data, made inert in Markdown: one helper for every cell and line of report.md that holds it.

Rows, env.json and exception messages are untrusted (a report folder is shared; a module's error text
is anything). Put raw into Markdown, a ``|`` splits a table cell, a newline ends a table or a list item,
a backtick opens a code span, ``<script>`` is raw HTML and ``[x](javascript:...)`` is a link. The same
lines feed report.html through the ``markdown`` package, so each escape here must read the same in
GitHub's Markdown and in Python-Markdown: backslash escapes for the characters both know, HTML entities
for the rest (``|`` as ``&#124;`` also keeps a GitHub table cell whole).
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, urlsplit

LINE_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;", "~": "&#126;"}
# Backslashed where they could act: backticks, backslashes and asterisks anywhere; an underscore at a
# word's edge (inside a word, as in val_loss, neither Markdown makes it emphasis); a closing bracket
# before ( [ or : (a link, a reference, a definition; a lone [1] stays as it reads).
ACTIVE = re.compile(r"[\\`*]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|\](?=[(\[:])")


def one_line(value: object) -> str:
    """The value as a single line: line breaks become spaces, other control characters go."""
    return CONTROL.sub("", LINE_BREAKS.sub(" ", str(value)))


def md_text(value: object) -> str:
    """A value from data as plain Markdown text: one line, no markup, no HTML, no table break."""
    text = ACTIVE.sub(lambda match: "\\" + match.group(), one_line(value))
    return "".join(ENTITIES.get(c, c) for c in text)


def md_code(value: object) -> str:
    """A value from data as an inline code span (a command line): a fence longer than any backtick run in it."""
    text = one_line(value)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def safe_href(href: str) -> bool:
    """Whether a link target may stay on the page: an ``#anchor`` or a relative path inside the run folder.

    Refuses schemes (``javascript:``, ``data:``, ``http:``), ``//host`` and absolute paths, ``..``
    segments, backslashes and control or space characters (browsers drop those inside a scheme, so
    ``java\\tscript:`` would still run).
    """
    if not href or any(ord(c) <= 32 or c in "\\\x7f" for c in href):
        return False
    if href.startswith("#"):
        return True
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or href.startswith("/") or not parts.path:
        return False
    normal = posixpath.normpath(parts.path)
    return normal != ".." and not normal.startswith("../") and ".." not in parts.path.split("/")


def md_link(label: object, target: object, image: bool = False) -> str:
    """``[label](target)`` when the target is a relative path inside the run folder; else the label and
    the target as plain text (a row may name ``javascript:`` or ``../../etc``: never a link)."""
    text = md_text(label)
    href = str(target)
    if not safe_href(href):
        return f"{text} ({md_text(href)}, not linked)"
    return f"{'!' if image else ''}[{text}]({quote(href, safe='/#.-_~')})"
