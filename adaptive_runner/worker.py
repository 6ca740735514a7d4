"""``python -m adaptive_runner.worker RUN_DIR [GROUP]``: the command every queued job script runs.

Kept at this path for good (the scripts of live runs name it); the worker is job/worker.py.
"""

import gc
import sys

from adaptive_runner.job.worker import main

if __name__ == "__main__":
    code = main()
    gc.freeze()  # spare the exit a collection of all adaptive imported (0.25 s of CPU here)
    sys.exit(code)
