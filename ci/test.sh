#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, types, tests (SLURM and SSH included).
# Works as root on a fresh Debian machine with Python 3.11; this is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

source ci/pip.sh
echo "== installing adaptive_runner with its test extras"
"$PYTHON" -m pip install -q -e ".[test,mpi]"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium for tests/e2e/test_browser.py"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== starting the three-node SLURM"
if bash ci/slurm/start.sh; then
  echo "SLURM is up"
elif [ -n "${CI:-}" ]; then
  echo "ci/test.sh: SLURM could not be started, and CI must run the slurm tests" >&2
  exit 1
else
  echo "SLURM could not be started: tests marked slurm will be skipped" >&2
fi

echo "== starting the two SSH test hosts"
if bash ci/ssh/start.sh; then
  echo "ssh node1 and node2 answer"
elif [ -n "${CI:-}" ]; then
  echo "ci/test.sh: the SSH test hosts could not be started, and CI must run the ssh tests" >&2
  exit 1
else
  echo "the SSH test hosts could not be started: tests marked ssh will be skipped" >&2
fi

echo "== ruff"
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
echo "== import contracts (.importlinter)"
"$PYTHON" -c "from importlinter.cli import lint_imports_command; lint_imports_command()"
echo "== mypy"
"$PYTHON" -m mypy
echo "== pytest"
"$PYTHON" -m pytest "$@"
