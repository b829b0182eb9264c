"""Turn results.jsonl into tables and report files; every file here can be regenerated from it."""

from harness.report.render import write_report
from harness.report.table import summary_frame

__all__ = ["summary_frame", "write_report"]
