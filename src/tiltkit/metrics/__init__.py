"""Sample-quality metrics."""

from .toy import emd, mmd2, mode_metrics, toy_metrics

__all__ = ["emd", "mmd2", "mode_metrics", "toy_metrics"]
