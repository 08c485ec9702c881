"""Formatters turn a job's parameters into something runnable, and run it."""

from .base import FormatError, Formatter, JobSpec, Outcome, RunContext
from .cli import CLIFormatter
from .python import PythonFormatter

__all__ = ["CLIFormatter", "FormatError", "Formatter", "JobSpec", "Outcome", "PythonFormatter", "RunContext"]
