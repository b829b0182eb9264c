"""Turn results.jsonl into tables, plots and report files; every file here can be regenerated from it.

table: the pandas summary; target: time-to-target; tblogs: curves from TensorBoard; plots: matplotlib
figures; build: what both pages show; render: report.md, results.csv and the entry point;
html_page: report.html; compare: two runs side by side.
"""

from harness.report.render import write_report
from harness.report.table import summary_frame
from harness.report.target import time_to_target

__all__ = ["summary_frame", "time_to_target", "write_report"]
