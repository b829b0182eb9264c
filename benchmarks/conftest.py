"""Benchmarks run under the README's test command: small budgets, CPU, ratios recorded in extra_info."""

import os

os.environ.setdefault("PYTHONWARNINGS", "ignore")
