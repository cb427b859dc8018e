"""``python -m amqpfast``: the command line (see :mod:`amqpfast.cli`)."""

import sys

from .cli import main

sys.exit(main())
