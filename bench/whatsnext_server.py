"""``whatsnext server`` for the benchmark: the ordinary CLI entry point, tied to the harness.

``python -m bench.whatsnext_server ARGS`` runs exactly ``python -m whatsnext server ARGS``
(same code, same defaults: uvloop, a pool of 2 to 10 connections, migrations applied on
start) in this process, plus one thread that exits the process as soon as its stdin (a
pipe held by the harness) reaches end-of-file, so a harness that dies without cleaning
up leaves no server behind. The harness stops it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading


def _watch_parent() -> None:
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    os._exit(3)


def main() -> None:
    threading.Thread(target=_watch_parent, name="bench-parent-watch", daemon=True).start()
    from whatsnext.cli import main as whatsnext_main

    whatsnext_main(["server", *sys.argv[1:]])


if __name__ == "__main__":
    main()
