"""Formatters turn a job's parameters into something runnable, and run it."""

from .base import FormatError, Formatter, JobSpec, Outcome, PreflightError, RunContext
from .cli import CLIFormatter
from .python import PythonFormatter
from .task import TaskFormatter

__all__ = [
    "CLIFormatter",
    "FormatError",
    "Formatter",
    "JobSpec",
    "Outcome",
    "PreflightError",
    "PythonFormatter",
    "RunContext",
    "TaskFormatter",
]
