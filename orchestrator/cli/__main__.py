"""``python -m djdask.cli``: the command line, as the ``djdask`` script runs it."""

import sys

from djdask.cli.parser import main

sys.exit(main())
