"""Any ``whatsnext`` command for the benchmark, tied to the harness (a worker, for instance).

``python -m bench.whatsnext_cli ARGS`` runs exactly ``python -m whatsnext ARGS`` in this process,
plus the thread of :mod:`bench.whatsnext_server` that exits the process as soon as its stdin (a
pipe held by the harness) reaches end-of-file, so a harness that dies without cleaning up leaves
no worker behind. The harness stops it with SIGTERM, which a worker takes as "finish the running
jobs, claim no more".
"""

from __future__ import annotations

import sys
import threading

from bench.whatsnext_server import _watch_parent


def main() -> None:
    threading.Thread(target=_watch_parent, name="bench-parent-watch", daemon=True).start()
    from whatsnext.cli import main as whatsnext_main

    whatsnext_main(sys.argv[1:])


if __name__ == "__main__":
    main()
