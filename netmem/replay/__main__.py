"""``python -m netmem.replay``: ``netmem-replay``, as the console script (``cli.main()``)."""
import sys

from netmem.replay.cli import main

if __name__ == "__main__":
    sys.exit(main())
