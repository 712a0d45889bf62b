"""``python -m mlcore``: see :mod:`mlcore.cli`."""

import sys

from mlcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
