"""The WhatsNext client: submit jobs (``Server``, ``Project``, ``Job``) and run them (``Client``)."""

from .errors import (
    BadRequest,
    Conflict,
    ConnectionError,
    NotFound,
    ServerError,
    TooManyRequests,
    ValidationError,
    WhatsNextError,
)
from .formatters import (
    CLIFormatter,
    FormatError,
    Formatter,
    JobSpec,
    Outcome,
    PreflightError,
    PythonFormatter,
    RunContext,
    TaskFormatter,
)
from .job import Job
from .project import AsyncProject, Project
from .results import upstream, write_result
from .server import AsyncServer, Server
from .worker import Client, WorkSummary

__all__ = [
    "AsyncProject",
    "AsyncServer",
    "BadRequest",
    "CLIFormatter",
    "Client",
    "Conflict",
    "ConnectionError",
    "FormatError",
    "Formatter",
    "Job",
    "JobSpec",
    "NotFound",
    "Outcome",
    "PreflightError",
    "Project",
    "PythonFormatter",
    "RunContext",
    "Server",
    "ServerError",
    "TaskFormatter",
    "TooManyRequests",
    "ValidationError",
    "WhatsNextError",
    "WorkSummary",
    "upstream",
    "write_result",
]


def __getattr__(name: str) -> object:
    # Cluster formatters load on first use.
    if name == "SlurmFormatter":
        from .formatters.slurm import SlurmFormatter

        return SlurmFormatter
    if name == "RUNAIFormatter":
        from .formatters.runai import RUNAIFormatter

        return RUNAIFormatter
    raise AttributeError(name)
