#!/usr/bin/env bash
# Benchmark bastion side by side with OpenSSH on this machine (loopback only).
#   scripts/bench.sh                     everything, full sizes (about 10 minutes on 2 cores)
#   scripts/bench.sh --quick             tiny sizes, under a minute
#   scripts/bench.sh --only bulk,setup --out bench/results/mine.json
# Needs what the tests need (OpenSSH ssh and sshd): installs them like scripts/test.sh.
# Prints tables and writes bench/results/*.json; what the figures mean: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ssh >/dev/null 2>&1 || ! { [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; }; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing openssh-client and openssh-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq openssh-client openssh-server >/dev/null 2>&1 || {
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq openssh-client openssh-server >/dev/null
    }
fi

scripts/setup.sh --test
exec .venv/bin/python -m bench "$@"
