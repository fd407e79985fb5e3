#!/usr/bin/env bash
# Run haul's test suite against real services (SeaweedFS S3 + PostgreSQL).
#
# Usage: bash scripts/test.sh [extra cargo test args]
#   e.g. bash scripts/test.sh -p haul-core -- --nocapture
#
# Starts the services (scripts/services.sh start), exports their connection
# settings (HAUL_TEST_S3_*, HAUL_TEST_PG_URL, HAUL_TOOLS_BIN), runs
# `cargo test --workspace "$@"` and stops the services again on exit, also on
# failure or Ctrl-C. The exit code is the test command's.
#
# Environment:
#   HAUL_KEEP_SERVICES=1  leave the services running afterwards (faster
#                         re-runs; stop them with `bash scripts/services.sh stop`)
#   HAUL_TEST_CMD         replaces the cargo command (run with `bash -c`, the
#                         extra args are passed as "$@"); only meant for
#                         testing this script's plumbing.
#   plus everything scripts/services.sh understands (ports, dirs).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(dirname "$script_dir")
services=$script_dir/services.sh

# shellcheck disable=SC2317 # invoked via trap
cleanup() {
    if [ "${HAUL_KEEP_SERVICES:-0}" = 1 ]; then
        echo "[test] HAUL_KEEP_SERVICES=1: leaving services running (stop: bash scripts/services.sh stop)" >&2
    else
        bash "$services" stop || echo "[test] WARNING: stopping services failed" >&2
    fi
}
# On INT/TERM: pass the signal on to the test command's whole process group
# (cargo and the test binaries it runs), then exit, which runs the EXIT trap.
test_pid=
# shellcheck disable=SC2317 # invoked via trap
on_signal() {
    if [ -n "$test_pid" ]; then
        kill -"$1" -- "-$test_pid" 2>/dev/null || true
        wait "$test_pid" 2>/dev/null || true
    fi
    exit "$2"
}
# EXIT covers normal exit and `set -e` failures.
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM

bash "$services" start
# The tests must find every service: a missing one fails instead of skipping.
export HAUL_TEST_REQUIRE_SERVICES=1
# Export the connection settings for the tests (and anything they spawn).
# (Assign first: a failing `env` then stops us via set -e; a bare
# eval "$(...)" would swallow the error.)
env_lines=$(bash "$services" env)
eval "$env_lines"

cd "$repo_root"
run_tests() {
    if [ -n "${HAUL_TEST_CMD:-}" ]; then
        echo "[test] running HAUL_TEST_CMD: $HAUL_TEST_CMD $*" >&2
        bash -c "$HAUL_TEST_CMD" haul-test-cmd "$@"
    else
        cargo test --locked --workspace "$@"
    fi
}
# Run the tests as a background job in their own process group (set -m) and
# wait for it: bash only runs a signal trap once the foreground command has
# finished, while `wait` returns at once, so Ctrl-C/TERM are handled promptly
# and can reach every test process via the group. stdin is passed through.
status=0
set -m
run_tests "$@" <&0 &
test_pid=$!
set +m
wait "$test_pid" || status=$?
test_pid=
exit "$status"
