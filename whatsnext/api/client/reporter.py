"""The worker's reporter: finished jobs' reports, sent in batches, retried until the server takes them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import structlog

from ...wire import ReportEntry
from .backoff import Backoff
from .errors import RETRYABLE, WhatsNextError
from .http import Http

log = structlog.get_logger("whatsnext.worker")

REPORT_BATCH_BYTES = 512 * 1024
"""A report request stays under this many bytes of JSON (proxies commonly refuse 1 MiB bodies)."""
REPORT_BATCH_ENTRIES = 500
ERROR_CHARS = 2000
"""The longest error a report carries (the worker's own bound, below the server's)."""


def _report_size(report: ReportEntry) -> int:
    return len(orjson.dumps(report))


def _slimmed(report: ReportEntry) -> ReportEntry:
    """A report the server can surely take: the outcome without the output tail, the result and
    the checkpoint (which a server older than checkpoints refuses)."""
    slim = cast(ReportEntry, {k: v for k, v in report.items() if k not in ("log", "result", "checkpoint")})
    error = slim.get("error")
    if isinstance(error, str):
        slim["error"] = error[-ERROR_CHARS:]
    return slim


class Reporter:
    """Sends finished jobs' reports in batches; retries with backoff until the server takes them.

    A batch stays under ``REPORT_BATCH_BYTES``. A batch the server refuses as a whole (413 behind
    a proxy with a smaller body limit, 400/422) is split in halves and each half sent again; a
    single report refused on its own is sent once more without its output tail and result. The
    server answers each entry in a batch on its own, so one bad entry never holds back the others.
    """

    def __init__(self, http: Http) -> None:
        self.http = http
        self.pending: list[tuple[ReportEntry, int]] = []
        """Reports not delivered yet, each with its size as JSON (measured once)."""
        self.unacknowledged: set[tuple[int, int]] = set()
        """Jobs started here whose report the server has not taken yet: still ours."""
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.batch_bytes = REPORT_BATCH_BYTES

    def put(self, report: ReportEntry) -> None:
        self.pending.append((report, _report_size(report)))
        self.idle.clear()
        self.wakeup.set()

    def _next_batch(self) -> list[ReportEntry]:
        batch: list[ReportEntry] = []
        size = 2
        for report, report_size in self.pending[:REPORT_BATCH_ENTRIES]:
            n = report_size + 1
            if batch and size + n > self.batch_bytes:
                break
            batch.append(report)
            size += n
        return batch

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch = self._next_batch()
                try:
                    results = await self._send(batch)
                except RETRYABLE as exc:
                    delay = backoff.next(exc.retry_after)
                    log.warning(
                        "report not delivered; retrying",
                        error=str(exc),
                        retry_in=round(delay, 2),
                        jobs=[r["id"] for r in batch],
                    )
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                del self.pending[: len(batch)]
                self.unacknowledged.difference_update((r["id"], r["attempt"]) for r in batch)
                for result in results:
                    if result["code"] != 200:
                        log.warning("report refused", job=result["id"], reason=result["message"])
            self.idle.set()

    async def drain(self) -> None:
        """Wait until every report put so far is delivered."""
        if not self.idle.is_set():
            log.info("delivering the last reports", jobs=len(self.pending))
        await self.idle.wait()

    async def _send(self, batch: list[ReportEntry]) -> list[dict[str, Any]]:
        """Deliver ``batch``, splitting what the server refuses as a whole; the per-entry answers."""
        try:
            out = await self.http.post("/jobs/reports", batch)
        except RETRYABLE:
            raise
        except WhatsNextError as exc:
            if len(batch) > 1:
                if exc.status == 413:
                    self.batch_bytes = max(4096, self.batch_bytes // 2)
                log.info("report batch refused; sending it in halves", status=exc.status, reports=len(batch))
                half = len(batch) // 2
                return [*(await self._send(batch[:half])), *(await self._send(batch[half:]))]
            slim = _slimmed(batch[0])
            if slim != batch[0]:
                log.warning(
                    "report refused; sending it without its output", job=batch[0]["id"], error=str(exc)
                )
                return await self._send([slim])
            log.error("report refused", job=batch[0]["id"], error=str(exc), details=exc.details)
            return [{"id": batch[0]["id"], "code": exc.status or 400, "message": str(exc)}]
        results: list[dict[str, Any]] = out["results"]
        retry = [r for r, res in zip(batch, results, strict=False) if res["code"] == 422 and _slimmed(r) != r]
        if retry:
            # An entry the server could not take as it is: its outcome, without the output, can be.
            again = {
                r["id"]: res
                for r, res in zip(retry, await self._send([_slimmed(r) for r in retry]), strict=False)
            }
            results = [again.get(res["id"], res) if res["code"] == 422 else res for res in results]
        return results
