"""``--help`` and a mistyped command answer without importing torch or Lightning (seconds each).

A behavioural check in a fresh interpreter: after the parser has answered, ``sys.modules`` must hold
neither. A subcommand still gets all of its arguments (``run --help`` lists ``--tricks``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from harness.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
heavy = sorted(name for name in ("torch", "lightning", "pandas") if name in sys.modules)
print("HEAVY=" + ",".join(heavy), "CODE=" + str(code), file=sys.stderr)
"""


def probe(*argv: str) -> tuple[str, str, str]:
    """Run the CLI's main in a fresh interpreter; its stdout, its stderr without the probe's line, the probe's line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    report = next(line for line in lines if line.startswith("HEAVY="))
    return done.stdout, "\n".join(line for line in lines if line != report), report


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["lsit"], []])
def test_help_version_and_a_typo_import_no_torch(argv: list[str]) -> None:
    stdout, stderr, report = probe(*argv)
    assert report.startswith("HEAVY= "), report
    if argv == ["--help"]:
        assert "list" in stdout and "export" in stdout and "Compare two runs" in stdout
    if argv == ["lsit"]:
        assert report.endswith("CODE=2")
        assert len(stderr.splitlines()) == 1 and "invalid choice: 'lsit'" in stderr, stderr


def test_a_subcommand_still_gets_all_its_arguments() -> None:
    stdout, _, report = probe("run", "--help")
    assert "--tricks" in stdout and "--max-steps" in stdout and "--dataset" in stdout
    assert report.endswith("CODE=0")
