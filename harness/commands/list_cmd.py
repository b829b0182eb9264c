"""``python -m harness list [PATTERN]``: every trick and workload, one line each."""

from __future__ import annotations

import argparse

from harness.trick import TRICKS
from harness.workload import WORKLOADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch glob over names (default: all)")


def main(args: argparse.Namespace) -> int:
    tricks = TRICKS.names(args.pattern)
    workloads = WORKLOADS.names(args.pattern)
    width = max((len(n) for n in [*tricks, *workloads]), default=10) + 2
    print("Tricks (--tricks NAME[,NAME...] or A+B; --param NAME.PARAMETER=VALUE):")
    for name in tricks:
        cls = TRICKS.get(name)
        params = ", ".join(f"{k}={v}" for k, v in cls.parameters().items())
        print(f"  {name:<{width}}{cls.summary}" + (f" [{params}]" if params else ""))
    print("\nWorkloads (--workload NAME[,NAME...] or all; --param NAME.PARAMETER=VALUE):")
    for name in workloads:
        cls = WORKLOADS.get(name)
        params = ", ".join(f"{k}={v}" for k, v in cls.parameters().items())
        print(f"  {name:<{width}}{cls.summary}" + (f" [{params}]" if params else ""))
    return 0
