"""Submitting jobs (one, or a batch in one request) so that a lost answer never doubles a job.

A submission that fails without an answer (the server unreachable, no answer in time, a 5xx) is
sent again, up to ``Http.retries`` times with backoff. Before the first send, every job of a
submission of at most ``Http.retry_keys_up_to`` jobs (``http.RETRY_KEYS_UP_TO``) without a unique
key of its own gets one for this submission (``retry:<id>:<index>``): if a send did arrive and its
answer was lost, the next finds those jobs by their keys instead of creating them again. The SDK
does not call such a job ``existing``: this submission made it.

Keys cost the server about 10 µs per job (a lookup, an index entry and a lock per key): a fifth
of the throughput of a batch of 1,000 plain jobs, nothing measurable for a few jobs. So a larger
submission is keyed only when its jobs have keys already (their own, or ``dedupe``); one whose
jobs are not all keyed is sent again only when it cannot have been queued: the server could not
be reached, or it answered 503 (it did nothing). With ``retries=0`` nothing is sent again and no
key is added.

The answer's warnings (a parameter no placeholder of the task's command uses) are emitted as
:class:`SubmitWarning` (``warnings.warn``), and each job keeps its own in ``job.warnings``.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from .backoff import Backoff
from .errors import RETRYABLE, ServerError, WhatsNextError
from .http import Http, project_path
from .job import RETRY_PREFIX, Job, key_text


class SubmitWarning(UserWarning):
    """A submission was accepted, with something that looks wrong (a parameter the task's command
    does not use: a typo?)."""


def retry_keys(entries: Sequence[dict[str, Any]]) -> frozenset[int]:
    """Give each entry without a ``unique_key`` one of this submission's own
    (``retry:<id>:<index>``, the id a random UUID's 128 bits in 26 symbols of
    ``job.KEY_ALPHABET``), in place; the indexes of the entries keyed so."""
    send = key_text(uuid.uuid4().bytes + b"\0", 26)
    keyed = []
    for index, entry in enumerate(entries):
        if entry.get("unique_key") is None:
            entry["unique_key"] = f"{RETRY_PREFIX}{send}:{index}"
            keyed.append(index)
    return frozenset(keyed)


async def post_submission(
    http: Http, path: str, body: Any, entries: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], frozenset[int]]:
    """POST a submission whose jobs are ``entries`` (inside ``body``), sent again after a failure
    that left no answer (:data:`RETRYABLE`: unreachable, timed out, 5xx), ``http.retries`` times,
    waiting at least what the server asks (``Retry-After``). With retries, the entries without a
    key get this submission's own first (:func:`retry_keys`) when there are at most
    ``http.retry_keys_up_to`` of them; a submission whose jobs are not all keyed is sent again only
    after a failure that left it unqueued (:func:`not_queued`). The answer, and the indexes of the
    entries keyed here."""
    keyed: frozenset[int] = frozenset()
    if http.retries > 0 and len(entries) <= http.retry_keys_up_to:
        keyed = retry_keys(entries)
    every_job_keyed = all(entry.get("unique_key") is not None for entry in entries)
    backoff = Backoff(first=0.25)
    for attempt in range(http.retries + 1):
        try:
            return dict(await http.post(path, body)), keyed
        except RETRYABLE as exc:
            if attempt < http.retries and (every_job_keyed or not_queued(exc)):
                await asyncio.sleep(backoff.next(exc.retry_after))
                continue
            if attempt < http.retries:
                exc.add_note(
                    f"the {len(entries)} jobs may have been queued: not sent again, as they have no keys "
                    "(give them unique keys or dedupe=True to make sending them again safe)"
                )
            raise
    raise AssertionError("unreachable")  # the loop returns or raises


def not_queued(exc: WhatsNextError) -> bool:
    """Whether a failed submission cannot have queued anything: the server could not be reached
    (no connection was made), or it answered 503 (the database was unavailable: nothing done)."""
    if isinstance(exc, ServerError):
        return exc.status == 503
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError)


def warning_lines(data: Mapping[str, Any]) -> list[str]:
    """The warnings of a submission's answer as lines: ``field: message``."""
    return [f"{w['field']}: {w['message']}" for w in data.get("warnings") or ()]


def warn_submission(data: Mapping[str, Any]) -> None:
    """Emit the warnings of a submission's answer (:class:`SubmitWarning`)."""
    for line in warning_lines(data):
        warnings.warn(line, SubmitWarning, stacklevel=3)


async def submit_job(http: Http, project: str | int, job: Job, *, dedupe: bool = False) -> dict[str, Any]:
    """Queue ``job`` in ``project`` (name or id); ``dedupe``: with a key from its task and
    parameters unless it has one. Binds the job to its id (the existing job's when its key was
    known: ``job.existing``) and returns the server's answer (201: created; 200: existing)."""
    body = job.to_request(dedupe)
    data, keyed = await post_submission(http, f"{project_path(project)}/jobs", body, [body])
    job._bind(http, data)
    job.existing = bool(data.get("existing")) and not keyed
    job.warnings = list(data.get("warnings") or ())
    warn_submission(data)
    return data


async def submit_jobs(
    http: Http, project: str | int, jobs: Sequence[Job], group: str | None = None, *, dedupe: bool = False
) -> dict[str, Any]:
    """Queue ``jobs`` in one request (one transaction), in group ``group`` if given; ``dedupe``:
    each with a key from its task and parameters unless it has one. Binds each job to its id (the
    existing job's for a known key: ``job.existing``; its status is then unknown until
    ``refresh``) and returns the server's answer."""
    entries = [job.to_request(dedupe) for job in jobs]
    body: Any = {"group": group, "jobs": entries} if group else entries
    data, keyed = await post_submission(http, f"{project_path(project)}/jobs/batch", body, entries)
    existing = list(data.get("existing") or [False] * len(entries))
    for index, (job, job_id) in enumerate(zip(jobs, data["ids"], strict=True)):
        job._bind(http, job_id=job_id)
        job.existing = bool(existing[index]) and index not in keyed
        if existing[index]:
            job.status = None  # whatever it is now: refresh() tells
        job.warnings = [
            {"field": w["field"], "message": w["message"]}
            for w in data.get("warnings") or ()
            if w.get("index") == index
        ]
    warn_submission(data)
    return data
