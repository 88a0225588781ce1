#!/usr/bin/env bash
# Failure drills under load through the balancer, one at a time, each
# printing its counts: requests, failed requests, balancer retries, lost
# writes, and how long the balancer took to stop using a node.
#   kill_9_one_node_of_three       kill -9 one of three API nodes
#   rolling_restart_of_every_node  SIGTERM each node in turn, restart it
#   redis_down_for_ten_seconds     kill Redis, start it again 10 s later
# Each drill starts its own PostgreSQL primary and replica, Redis, nodes
# and balancer on free loopback ports (see crates/infinity/tests/drills.rs).
#
# Usage: bench/drills.sh [TEST_NAME_FILTER]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
"$root/scripts/install-deps"
cd "$root"
cargo test --release -p infinity --test drills -- --nocapture --test-threads 1 "$@"
