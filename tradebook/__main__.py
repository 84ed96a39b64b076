"""``python -m tradebook`` runs the ``tradebook`` command."""

import sys

from tradebook.cli import main

sys.exit(main())
