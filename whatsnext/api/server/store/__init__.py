"""The store: the only code that talks SQL. One class per table family, one method per named
statement in ``sql/queries``; arguments are passed by name and rows come back as plain dicts
whose keys are the statement's columns. Routes call the store, never the pool."""

from __future__ import annotations

import asyncpg

from .alloc import AllocStore
from .artifacts import ArtifactStore
from .dashboard import DashboardStore
from .groups import GroupStore
from .jobs import JobStore
from .logs import LogStore
from .metrics import MetricsStore
from .projects import ProjectStore
from .retention import RetentionStore
from .schedules import ScheduleStore
from .sharing import SharingStore
from .tasks import TaskStore
from .tokens import TokenStore
from .ui_sessions import UiSessionStore
from .workers import WorkerStore


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.jobs = JobStore(pool)
        self.logs = LogStore(pool)
        self.artifacts = ArtifactStore(pool)
        self.workers = WorkerStore(pool)
        self.projects = ProjectStore(pool)
        self.sharing = SharingStore(pool)
        self.tasks = TaskStore(pool)
        self.tokens = TokenStore(pool)
        self.metrics = MetricsStore(pool)
        self.groups = GroupStore(pool)
        self.dashboard = DashboardStore(pool)
        self.ui_sessions = UiSessionStore(pool)
        self.alloc = AllocStore(pool)
        self.retention = RetentionStore(pool)
        self.schedules = ScheduleStore(pool)


__all__ = [
    "AllocStore",
    "ArtifactStore",
    "DashboardStore",
    "GroupStore",
    "JobStore",
    "LogStore",
    "MetricsStore",
    "ProjectStore",
    "RetentionStore",
    "ScheduleStore",
    "SharingStore",
    "Store",
    "TaskStore",
    "TokenStore",
    "UiSessionStore",
    "WorkerStore",
]
