"""The numeric-setting check lives in `nanochat_hf.checks` (torch-free, so the planner can use it too)."""

from ..checks import check_number


__all__ = ["check_number"]
