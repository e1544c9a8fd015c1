"""``python -m rsna_tui``: the same as the ``rsna-tui`` command."""
import sys

from rsna_tui.cli import main

if __name__ == "__main__":
    sys.exit(main())
