"""Peer systems measured next to WhatsNext: PgQueuer and Procrastinate.

Each ``<peer>_bench`` module exposes ``async def run(dsn, cfg, progress) -> dict`` and
runs in the harness process; each ``<peer>_worker`` module is the worker process it
starts (``python -m bench.peers.<peer>_worker``).
"""
