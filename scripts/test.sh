#!/usr/bin/env bash
# Install everything the tests need, then run them.
#   scripts/test.sh                 the whole suite, then the inproc, e2e and reliability tiers again on PostgreSQL
#   scripts/test.sh unit            one tier: unit, integration, inproc, e2e, reliability or house
#   scripts/test.sh tests/unit -q   any pytest arguments
#   BASTION_TEST_JOBS=0 scripts/test.sh   one process (default: 4 parallel, pytest-xdist)
#   BASTION_TEST_STORE=sqlite scripts/test.sh   the whole suite once, rigs on SQLite only
# Needs: Python >= 3.11, and (as root, or with sudo) apt-get for openssh-server/client and rsync:
# the end-to-end tests drive the real OpenSSH ssh client (and rsync) against a real sshd on 127.0.0.1,
# and the web viewer's tests Debian's chromium (/usr/bin/chromium); postgresql for the
# PostgreSQL store's tests (a private cluster in a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs+=(openssh-client)
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || need_pkgs+=(openssh-server)
# the web viewer's browser tests drive Debian's chromium with Playwright (no browser download)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
# the PostgreSQL store's tests run a private cluster (tests/pgcluster.py)
command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    || need_pkgs+=(postgresql)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    }
fi

scripts/setup.sh --test

# Test files run in parallel processes (pytest-xdist), a file's tests together in one process
# (its module-scoped rigs are shared): the end-to-end tests mostly wait on real ssh round
# trips, so more processes than cores pays.  BASTION_TEST_JOBS=0 runs in this one process;
# an explicit -n/--numprocesses among the arguments wins.
jobs=(-n "${BASTION_TEST_JOBS:-4}" --dist loadfile)
for arg in "$@"; do
    case "$arg" in -n|-n*|--numprocesses*|no:xdist) jobs=() ;; esac
done
case "${1:-}" in
    unit|integration|inproc|e2e|reliability|house)
        tier="$1"; shift
        exec .venv/bin/python -m pytest "tests/$tier" -m "$tier" ${jobs[@]+"${jobs[@]}"} "$@" ;;
esac
# A tier, a test path or BASTION_TEST_STORE given: one pass, as asked.  (Options alone, such
# as `-q -p no:cacheprovider`, still mean the whole suite: an argument is taken for a test
# path when it names one that exists, `tests/x.py::test_y` included.)
whole=1
for arg in "$@"; do
    case "$arg" in -*) continue ;; esac
    if [ -e "${arg%%::*}" ]; then whole=0; fi
done
if [ "$whole" = 0 ] || [ -n "${BASTION_TEST_STORE:-}" ]; then
    exec .venv/bin/python -m pytest ${jobs[@]+"${jobs[@]}"} "$@"
fi
# The whole suite: every tier with the rigs on SQLite (the embedded default), then the tiers
# whose rigs take a store (inproc, e2e, reliability) again with every rig on PostgreSQL (a private
# cluster, a database per rig), so both backends pass the whole suite.  Not repeated: the
# files that choose their own store whatever BASTION_TEST_STORE says (test_store_pg and
# test_transfer_copies_pg: always PostgreSQL; test_bench_scaling_quick: both; the other bench tests and test_demo/test_container:
# their own SQLite bastion; test_close_on_full_disk: its own Recorder on SQLite), which the
# first pass already ran.
status=0
.venv/bin/python -m pytest ${jobs[@]+"${jobs[@]}"} "$@" || status=$?
echo "== again with every rig on PostgreSQL (BASTION_TEST_STORE=postgresql): tests/inproc tests/e2e tests/reliability" >&2
BASTION_TEST_STORE=postgresql .venv/bin/python -m pytest tests/inproc tests/e2e tests/reliability \
    --ignore=tests/e2e/test_store_pg.py --ignore=tests/e2e/test_transfer_copies_pg.py \
    --ignore=tests/e2e/test_demo.py \
    --ignore=tests/e2e/test_container.py --ignore-glob='tests/e2e/test_bench_*' \
    --ignore=tests/reliability/test_close_on_full_disk.py \
    ${jobs[@]+"${jobs[@]}"} "$@" || { rc=$?; [ "$status" != 0 ] || status=$rc; }
exit "$status"
