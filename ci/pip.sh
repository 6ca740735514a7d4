# Sourced by ci/test.sh and ci/demo.sh: a Python with pip, allowed to install as root.
PYTHON=${PYTHON:-python3}
export PIP_BREAK_SYSTEM_PACKAGES=1  # Debian's own python refuses pip installs without it
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3-pip
fi
