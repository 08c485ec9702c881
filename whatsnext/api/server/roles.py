"""Roles, permissions and the rule every route carries: who may call it, and how a token that
covers some projects only (or a worker token) is held to its own.

A leaf module: the route registry, the OpenAPI document and the auth middleware read it; it reads
none of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Permission = Literal["read", "submit", "manage", "work", "projects", "tokens", "secrets"]
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "submit", "manage", "work", "projects", "tokens", "secrets"}),
    "operator": frozenset({"read", "submit", "manage", "secrets"}),
    "submitter": frozenset({"read", "submit", "secrets"}),
    "worker": frozenset({"read", "work"}),
    "viewer": frozenset({"read"}),
}
"""Each role's bundle. ``read``: look at projects, jobs, logs, workers, metrics; ``submit``: queue
jobs; ``manage``: cancel, retry, delete jobs, clear queues, create tasks; ``work``: register,
claim, heartbeat, report, append logs and artifacts; ``projects``: create, edit, delete projects;
``tokens``: create, list, revoke tokens; ``secrets``: see secret parameters unmasked."""

Scope = Literal[
    "public",
    "global",
    "list",
    "project",
    "job",
    "worker",
    "body_project",
    "register",
    "claim",
    "pool",
    "reports",
    "logs",
    "alloc_queue",
    "alloc_projects",
    "allocation",
    "dashboard",
]
"""How a request is held to the token's projects (and a worker token to its own workers):

- ``public``: no token needed (``/health``, which then shows less);
- ``global``: nothing to scope (the permission alone decides: tokens, creating projects);
- ``list``: the answer holds only the token's projects (filtered in the SQL or the handler);
- ``project``: the project named in the path;
- ``job``: the project of the job in the path (with ``own``: a job a worker of the token holds);
- ``worker``: the worker in the path (a worker token: one it registered);
- ``body_project``: the project named in the body (``project_id``);
- ``register``: the project a worker registers for (a token covering some projects must name one);
- ``claim``: the project in the path, and a worker token claims for a worker it registered;
- ``pool``: the projects named in the body (``projects``; ``all_projects``: the token's), and a
  worker token claims for a worker it registered;
- ``reports``: each reported job is held by a worker of the token (decided in the report's SQL);
- ``logs``: each job of a log batch is held by a worker of the token;
- ``alloc_queue``: the allocation queue named in the path serves only projects the token covers;
- ``alloc_projects``: as ``alloc_queue`` when the path names a queue, and the projects the body
  names (``projects``) are each covered;
- ``allocation``: the queue of the allocation in the path serves only projects the token covers;
- ``dashboard``: a web page, which checks the session or token itself.
"""

BODY_SCOPES: frozenset[str] = frozenset(
    {"body_project", "register", "claim", "pool", "logs", "alloc_projects"}
)
"""Scopes decided on the request body, once the route has parsed it (``http.parse_body``)."""


@dataclass(frozen=True)
class Rule:
    """A route's permission and scope (see :data:`Scope`)."""

    permission: Permission | None
    """What the route needs (None: nothing, ``/health`` and the login form)."""
    scope: Scope = "global"
    own: bool = False
    """A worker token may act only on jobs held by the workers it registered."""
    unmasked: bool = False
    """The answer carries secret parameters in full (a claim: the worker runs the job)."""
    global_fields: frozenset[str] = frozenset()
    """Body fields only a token that covers every project may set (a project's share and quotas:
    a token of some projects could otherwise raise their own). Decided on the parsed body."""

    def __post_init__(self) -> None:
        if self.permission is not None and self.permission not in PERMISSIONS["admin"]:
            raise ValueError(f"unknown permission {self.permission!r}")

    @property
    def on_body(self) -> bool:
        return self.scope in BODY_SCOPES or bool(self.global_fields)


PUBLIC = Rule(None, "public")
READ = Rule("read")
READ_LIST = Rule("read", "list")
READ_PROJECT = Rule("read", "project")
READ_JOB = Rule("read", "job")
SUBMIT_PROJECT = Rule("submit", "project")
MANAGE_PROJECT = Rule("manage", "project")
MANAGE_JOB = Rule("manage", "job")
WORK_OWN_JOB = Rule("work", "job", own=True)
WORK_OWN_WORKER = Rule("work", "worker")
TOKENS = Rule("tokens")
PAGE = Rule("read", "dashboard")
"""A dashboard page: the page checks the viewer (session cookie or token) itself."""
PAGE_OPEN = Rule(None, "dashboard")
"""A dashboard route anyone reaches (the login form, the static files)."""

BOOTSTRAP_NAME = "admin"
"""The name of the admin token given at start (``--admin-token-file``), which is in no table."""


@dataclass(frozen=True)
class Principal:
    """Who is behind a request: a token's id (None for the bootstrap admin token), name, role and
    the projects it covers (None: all)."""

    id: int | None
    name: str
    role: str
    projects: frozenset[int] | None

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def covers(self, project_id: int | None) -> bool:
        return self.projects is None or (project_id is not None and project_id in self.projects)

    @property
    def worker_token(self) -> int | None:
        """The token's id when it is a stored worker token: it acts only on the jobs its own
        workers hold."""
        return self.id if self.role == "worker" else None
