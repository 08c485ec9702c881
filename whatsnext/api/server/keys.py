"""Typed application state keys."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from .config import Settings
from .notify import NotifyHub
from .store import Store

settings_key = web.AppKey("settings", Settings)
pool_key = web.AppKey("pool", asyncpg.Pool)
hub_key = web.AppKey("hub", NotifyHub)
database_key = web.AppKey("database", str)
store_key = web.AppKey("store", Store)
worker_tokens_key = web.AppKey("worker_tokens", dict)
"""Which token registered each worker (worker id to token id, None for none), as the auth checks
learned it: a worker keeps the token it was registered with, and ids are never reused."""
