"""``python -m quicconn``: the same as the ``quicconn`` command."""

import sys

from .cli import main

sys.exit(main())
