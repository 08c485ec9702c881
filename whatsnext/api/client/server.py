"""Connection to a WhatsNext server: ``Server("localhost", 8000)`` (sync) or ``AsyncServer`` (async)."""

from __future__ import annotations

from typing import Any

from .errors import Conflict
from .http import RETRY_KEYS_UP_TO, Http, project_path, server_url
from .job import Job
from .project import AsyncProject, Project
from .syncio import run_sync


class AsyncServer:
    """Async entry point: ``server = AsyncServer("http://localhost:8000")``."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        retry_keys_up_to: int = RETRY_KEYS_UP_TO,
    ) -> None:
        """``retries``: times a submission of jobs is sent again when the server could not be
        reached, did not answer in ``timeout`` seconds or failed (5xx). The jobs of a submission of
        at most ``retry_keys_up_to`` jobs get unique keys first, so that none is created twice; a
        larger one whose jobs have no keys of their own (``dedupe``) is sent again only when it
        cannot have been queued (0 retries: never sent again)."""
        self.url = server_url(host, port)
        self.http = Http(
            self.url, token=token, timeout=timeout, retries=retries, retry_keys_up_to=retry_keys_up_to
        )

    def __repr__(self) -> str:
        return f"AsyncServer({self.url!r})"

    async def health(self) -> dict[str, Any]:
        return dict(await self.http.get("/health"))

    async def get_project(self, name: str | int) -> AsyncProject:
        return AsyncProject(self.http, await self.http.get(project_path(name)))

    async def create_project(
        self, name: str, description: str = "", *, exist_ok: bool = False, strict_tasks: bool = False
    ) -> AsyncProject:
        """Create a project. ``exist_ok=True``: if it exists already, return it (a submit script
        can be run again). ``strict_tasks=True``: jobs for unknown tasks are refused."""
        body = {"name": name, "description": description, "strict_tasks": strict_tasks}
        try:
            return AsyncProject(self.http, await self.http.post("/projects", body))
        except Conflict:
            if not exist_ok:
                raise
            return await self.get_project(name)

    async def list_projects(self, status: str | None = None) -> list[AsyncProject]:
        data = await self.http.get("/projects", status=status)
        return [AsyncProject(self.http, p) for p in data["projects"]]

    async def get_job(self, job_id: int) -> Job:
        return Job.from_server(self.http, await self.http.get(f"/jobs/{int(job_id)}"))

    async def list_workers(self, project: str | int | None = None) -> list[dict[str, Any]]:
        return list((await self.http.get("/workers", project=project))["workers"])

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> AsyncServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Server:
    """Synchronous entry point, as in ``Server("localhost", 8000)``; also ``Server("http://host:port")``."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        retry_keys_up_to: int = RETRY_KEYS_UP_TO,
    ) -> None:
        self.aio = AsyncServer(
            host, port, token=token, timeout=timeout, retries=retries, retry_keys_up_to=retry_keys_up_to
        )
        self.url = self.aio.url

    def __repr__(self) -> str:
        return f"Server({self.url!r})"

    def health(self) -> dict[str, Any]:
        return run_sync(self.aio.health())

    def get_project(self, name: str | int) -> Project:
        return Project(run_sync(self.aio.get_project(name)))

    def create_project(
        self, name: str, description: str = "", *, exist_ok: bool = False, strict_tasks: bool = False
    ) -> Project:
        return Project(
            run_sync(self.aio.create_project(name, description, exist_ok=exist_ok, strict_tasks=strict_tasks))
        )

    def list_projects(self, status: str | None = None) -> list[Project]:
        return [Project(p) for p in run_sync(self.aio.list_projects(status))]

    def get_job(self, job_id: int) -> Job:
        return run_sync(self.aio.get_job(job_id))

    def list_workers(self, project: str | int | None = None) -> list[dict[str, Any]]:
        return run_sync(self.aio.list_workers(project))

    def close(self) -> None:
        run_sync(self.aio.close())
