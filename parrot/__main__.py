"""``python -m parrot``: the parrot command line (see parrot.cli)."""
import sys

from parrot.cli import main

sys.exit(main())
