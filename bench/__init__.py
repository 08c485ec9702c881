"""Benchmark harness comparing WhatsNext with PgQueuer and Procrastinate.

Run with ``python -m bench`` (or ``make bench``); see ``bench/README.md``.
"""
