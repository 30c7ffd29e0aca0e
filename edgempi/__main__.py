"""``python -m edgempi``: the same as the ``edgempi`` command."""
import sys

from edgempi.cli import main

sys.exit(main())
