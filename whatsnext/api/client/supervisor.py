"""The supervisor that stands between the worker and one job's processes (POSIX).

The worker starts every subprocess job as::

    python -I -S supervisor.py CONTROL_FD WORKER_PID GRACE PROGRAM [ARG ...]

The supervisor starts ``PROGRAM`` in a process group of its own (the job's group) and watches:

* **The control pipe** (``CONTROL_FD``): the worker holds its only write end. Each byte the worker
  writes is a signal number, sent to the job's whole process group (the worker's cancel and
  timeout: SIGTERM, then SIGKILL after its grace). End of file means the worker is gone (killed,
  even by SIGKILL, or crashed): the supervisor sends SIGTERM to the job's group, waits at most
  ``GRACE`` seconds for the job to exit, then sends SIGKILL to the group.
* **Parent death** (Linux, a second line of defence): ``PR_SET_PDEATHSIG`` wakes the supervisor
  when the thread that started it exits; when its parent is then no longer ``WORKER_PID``, the
  worker is gone and the group is stopped as above. The job's main process also gets
  ``PR_SET_PDEATHSIG`` = SIGKILL towards the supervisor.
* **The job's exit**: what the job left running in its process group is killed, and the supervisor
  exits with the job's status: its exit code, or death by the signal that killed the job, so the
  worker sees what it would have seen without a supervisor.

Signals sent to the supervisor itself (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR2) are passed on to
the job's group. A program that cannot be started is reported on the job's output, with exit code
127.

It is on the path of every job, so it starts in a few milliseconds: run with ``-I -S``, it imports
only built-in modules (``_signal`` rather than ``signal``, ``_ctypes`` rather than ``ctypes``).
"""

from __future__ import annotations

import _signal
import errno
import os
import select
import sys
import time

PR_SET_PDEATHSIG = 1
EXEC_FAILED = 127
SIGCHLD = _signal.SIGCHLD
SIGKILL = _signal.SIGKILL
SIGTERM = _signal.SIGTERM
PARENT_GONE = _signal.SIGUSR1
FORWARDED = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR2)
IGNORED_BY_PYTHON = (_signal.SIGPIPE, _signal.SIGXFSZ)
"""Python ignores these at start; a job gets them back at their default, as a shell starts it."""


def _prctl() -> object | None:
    """libc's ``prctl`` on Linux (None elsewhere), bound through ``_ctypes`` for a fast start."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import _ctypes

        class CInt(_ctypes._SimpleCData):
            _type_ = "i"

        class CFunction(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:
            _handle = _ctypes.dlopen(None, 0)

        return CFunction(("prctl", Libc()))
    except Exception:  # an unusual Python build: take the documented way
        try:
            import ctypes

            return ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _start(argv: list[str], prctl: object | None) -> int:
    """Fork the job in a new process group of its own; returns its pid (= its group id)."""
    me = os.getpid()
    pid = os.fork()
    if pid == 0:  # the job
        try:
            os.setpgid(0, 0)
            for sig in IGNORED_BY_PYTHON:
                _signal.signal(sig, _signal.SIG_DFL)
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)  # type: ignore[operator]
                if os.getppid() != me:
                    os._exit(EXEC_FAILED)
            os.execvp(argv[0], argv)
        except BaseException as exc:  # the child never returns into the supervisor
            try:
                os.write(2, f"[whatsnext] could not start {argv[0]!r}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(EXEC_FAILED)
    try:
        os.setpgid(pid, pid)  # here too, so that a signal sent at once finds the group
    except OSError:
        pass
    return pid


def _exit_like(status: int) -> None:
    """Leave with the job's wait status: the same exit code, or death by the same signal."""
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, OSError, ValueError):
        pass
    try:
        _signal.signal(sig, _signal.SIG_DFL)  # (refused for SIGKILL and SIGSTOP: nothing to undo)
    except (OSError, ValueError):
        pass
    try:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    finally:
        os._exit(128 + sig)  # only reached for a signal whose default action is to do nothing


def main(args: list[str]) -> int:
    if len(args) < 4:
        os.write(2, b"usage: supervisor.py CONTROL_FD WORKER_PID GRACE PROGRAM [ARG ...]\n")
        return 2
    control: int | None = int(args[0])
    worker = int(args[1])
    grace = float(args[2])
    argv = args[3:]
    os.set_inheritable(int(args[0]), False)  # the job never holds it
    os.set_blocking(int(args[0]), False)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    received: list[int] = []

    def note(sig: int, _frame: object) -> None:
        received.append(sig)

    for sig in (SIGCHLD, PARENT_GONE, *FORWARDED):
        _signal.signal(sig, note)
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, PARENT_GONE, 0, 0, 0)  # type: ignore[operator]

    job = _start(argv, prctl)
    deadline: float | None = None  # once the worker is gone: when SIGKILL follows SIGTERM

    def worker_gone() -> None:
        nonlocal deadline
        if deadline is None:
            _killpg(job, SIGTERM)
            deadline = time.monotonic() + grace

    if os.getppid() != worker:
        worker_gone()  # it died before the watch began
    while True:
        try:
            pid, status = os.waitpid(job, os.WNOHANG)
        except ChildProcessError:
            return EXEC_FAILED
        if pid:
            _killpg(job, SIGKILL)  # what the job left behind in its group
            _exit_like(status)
        while received:
            sig = received.pop(0)
            if sig == PARENT_GONE:
                if os.getppid() != worker:  # not merely the starting thread that ended
                    worker_gone()
            elif sig != SIGCHLD:
                _killpg(job, sig)  # a signal for the supervisor is meant for the job
        timeout: float | None = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                _killpg(job, SIGKILL)
                timeout = 1.0
        watch = [wake_r] if control is None else [wake_r, control]
        ready, _, _ = select.select(watch, [], [], timeout)
        if wake_r in ready:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
        if control is not None and control in ready:
            try:
                data = os.read(control, 64)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:  # end of file: the worker is gone
                os.close(control)
                control = None
                worker_gone()
            for sig in data:
                _killpg(job, sig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
