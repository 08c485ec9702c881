"""Every bound of the system, defined once: what one request may carry, what the server keeps, and
the defaults of the server's size and stream options. The server's validation and settings, the
SDK, the worker and the CLI import them from here; the docs quote them (a test holds the quotes).

Bounds only: the server's rate limiting and stream counting live in ``whatsnext.api.server.limits``.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------- batches and caps of one request

MAX_BATCH: Final = 10_000
"""Jobs in one submission (``POST /projects/{p}/jobs/batch``)."""
MAX_CLAIM_JOBS: Final = 1000
"""Jobs one claim asks for at most (``max_jobs``)."""
MAX_REPORTS: Final = 10_000
"""Reports in one ``POST /jobs/reports``."""
MAX_CLAIM_WAIT: Final = 600
"""Seconds a claim may ask to wait (``wait``); the server grants at most its ``--max-wait``."""
MAX_TIME_LEFT: Final = 10 * 365 * 86400.0
"""The longest time left a worker may announce (ten years: a worker without an end sends none)."""
MAX_LOG_BATCH: Final = 1000
"""Output lines of one job in one log request."""
MAX_LOG_REQUEST: Final = 10_000
"""Output lines in one ``POST /jobs/logs``, all jobs together."""
MAX_LOG_JOBS: Final = 1000
"""Jobs in one ``POST /jobs/logs``."""
MAX_LOG_LINE: Final = 65_536
"""Characters of one output line the server takes."""
MAX_ARTIFACTS: Final = 10_000
"""Artifacts recorded in one request."""
MAX_LIST: Final = 1000
"""Entries of a list inside one job or task: its inputs, its outputs, the tasks a claim names."""

MAX_COUNT: Final = 1_000_000
"""The largest CPU or GPU count a job may require and a worker offer (a worker whose jobs run on
SLURM or RUN:AI offers it: the host it runs on does not bound them)."""

# ---------------------------------------------------------------- lengths of one field

MAX_NAME: Final = 200
"""Characters of a project, task or worker name (and of a worker's entity)."""
MAX_JOB_NAME: Final = 500
"""Characters of a job name (and of a dependency named by job name)."""
MAX_TAG: Final = 100
"""Characters of a tag."""
MAX_URI: Final = 4096
"""Characters of an input, output or artifact path or URI."""
MAX_REASON: Final = 1000
"""Characters of an artifact's reason (refused, or without a sha256) and of an external handle."""
MAX_ERROR: Final = 100_000
"""Characters of a report's error."""
MAX_LOG_TAIL: Final = 1_000_000
"""Characters of a report's output tail (``log``)."""
MAX_DESCRIPTION: Final = 10_000
"""Characters of a project's description."""
MAX_ATTEMPTS: Final = 1000
"""The largest ``max_attempts`` (and ``max_lost``) of a job or task."""
MAX_RESULT_BYTES: Final = 64 * 1024
"""A job's ``result`` as JSON, in bytes: 64 KiB. A larger one is stored as
``{"$oversized": {"bytes": N, "limit": L}}`` instead (by the worker before it reports, and by
the server for any report): marked, never refused."""
MAX_SHARE: Final = 1_000_000
"""The largest ``share`` of a project (its weight in the pool; the smallest is anything above 0)."""

# ---------------------------------------------------------------- server options (defaults)

MAX_PARAMETERS_BYTES: Final = 1024**2
"""A job's ``parameters`` (and a task's ``defaults``) as JSON, in bytes: 1 MiB
(``--max-parameters-bytes``, ``$WHATSNEXT_MAX_PARAMETERS_BYTES``)."""
MAX_BODY_BYTES: Final = 16 * 1024**2
"""A request body, in bytes: 16 MiB (``--max-body-bytes``, ``$WHATSNEXT_MAX_BODY_BYTES``)."""
LOG_KEEP_LINES: Final = 10_000
"""Output lines the server keeps of each job, all attempts together (``$WHATSNEXT_LOG_KEEP_LINES``)."""
MAX_STREAMS_PER_CLIENT: Final = 20
"""Open streams (live updates, log follows) of one client address (``--max-streams-per-client``)."""
MAX_STREAMS: Final = 1000
"""Open streams of one server process, all clients together (``--max-streams``)."""
MAX_DELAY: Final = 366 * 86400
"""The longest delay a job may be submitted with (seconds): a year."""
