"""The monitoring dashboard as a ``panel serve`` script (thin: the package builds it).

    panel serve dashboards/monitor.py --address 127.0.0.1 --args path/to/store.duckdb

reads a closed store read-only (the workspace store without ``--args``). ``tradebook
dashboard`` serves the same page with the read API beside it and the token rules, and
``session.dashboard()`` serves it from a running session's process with its controls.
"""

import sys

from tradebook.monitor.app import build_app
from tradebook.monitor.source import open_source

build_app(open_source(sys.argv[1] if len(sys.argv) > 1 else None)).servable(title="tradebook monitor")
