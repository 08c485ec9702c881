"""structlog setup: pretty lines on a terminal, JSON lines otherwise.

What libraries log through the standard ``logging`` module (asyncpg's pool failing to reconnect
while PostgreSQL is down, aiohttp, asyncio's "exception never retrieved") and Python's warnings
go through the same renderer: one JSON object per line there too, a traceback in its
``exception`` field, never plain-text lines in a JSON log. Those loggers show warnings and errors
(and more with ``--log-level DEBUG``).
"""

from __future__ import annotations

import logging
import sys

import structlog


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a command run in-process may redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stream: logging reports it its own way
            self.handleError(record)


def configure(level: str = "INFO", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    )
    exc_info: structlog.typing.Processor = (
        structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso")
    number = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(renderer, exc_info, timestamper, number)


def _route_standard_logging(
    renderer: structlog.typing.Processor,
    exc_info: structlog.typing.Processor,
    timestamper: structlog.typing.Processor,
    level: int,
) -> None:
    """Render the records of the ``logging`` module as structlog renders its own events, on one
    handler of the root logger (replaced, not added again, when configured again)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc_info, renderer],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    handler.set_name("whatsnext")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "whatsnext"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    logging.captureWarnings(True)
