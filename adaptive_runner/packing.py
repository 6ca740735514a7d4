"""``python -m adaptive_runner.packing WORKERS COMMAND...``: what cluster job scripts start.

Kept at this path for good (the scripts of live runs name it); the packer is job/packer.py.
"""

import sys

from adaptive_runner.job.packer import main

if __name__ == "__main__":
    sys.exit(main())
