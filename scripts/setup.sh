#!/usr/bin/env bash
# Set up bastion in a local virtualenv (.venv).  Idempotent; safe to run again.
#   scripts/setup.sh            install bastion
#   scripts/setup.sh --test     install bastion and what the tests need (pytest, asciinema)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: bastion needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
TARGET=.
[ "${1:-}" = "--test" ] && TARGET='.[test]'
# Editable install, in setuptools' "compat" mode where it still exists: the checkout is
# put on sys.path by a plain .pth line.  The default mode installs an import hook that
# every Python start in the venv imports (~20 ms), and bastion-askpass starts once per
# token round (three per login with an Entra-sized token); a regular `pip install .`
# (the Dockerfile) has no such cost either.  Where compat is gone, the default is used.
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if ! .venv/bin/python -m pip install --quiet --config-settings editable_mode=compat \
        -e "$TARGET" >"$LOG" 2>&1; then
    .venv/bin/python -m pip install --quiet -e "$TARGET"
fi
echo "bastion installed in .venv: try .venv/bin/bastion demo" >&2
