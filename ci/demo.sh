#!/usr/bin/env bash
# Install adaptive_runner and run the demo on the embedded Local scheduler (no cluster needed).
set -euo pipefail
cd "$(dirname "$0")/.."

source ci/pip.sh
"$PYTHON" -m pip install -q -e .
"$PYTHON" -m adaptive_runner.cli demo --dir "${DEMO_DIR:-adaptive-runner-demo}"
