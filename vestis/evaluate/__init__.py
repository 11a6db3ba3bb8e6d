"""Evaluation stage: pure metrics (`metrics`) and report/plot writers (`report`)."""

from .metrics import compute_metrics, format_table, most_confident_errors, summarize
from .report import plot_confusion, plot_gallery, write_report

__all__ = [
    "compute_metrics",
    "format_table",
    "most_confident_errors",
    "plot_confusion",
    "plot_gallery",
    "summarize",
    "write_report",
]
