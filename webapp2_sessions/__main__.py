"""``python -m webapp2_sessions``: the admin command (see ``cli.py``)."""

import sys

from .cli import main

sys.exit(main())
