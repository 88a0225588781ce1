#!/usr/bin/env bash
# Phase-6 drills under `infinity load` traffic, one at a time, each
# printing its figures:
#   kill_9_worker_mid_job           kill -9 the worker running a variant job
#   rabbitmq_down_for_ten_seconds   kill RabbitMQ, register users, restart it
#   poison_job_ends_dead            a job failing every attempt, 20 good ones
#   upload_burst_keeps_logins_fast  1,000 uploads against login p99, with
#                                   the target's verdict
#   upload_burst_with_jobs_in_the_node  the same burst, jobs run by the node
# Each drill starts its own private RabbitMQ node, PostgreSQL server and
# Redis, an API node without workers and two `infinity worker` processes,
# all on loopback (see crates/infinity/tests/phase6_drills.rs). The test
# suite runs the same drills, except the comparison, in debug mode.
#
# Usage: bench/phase6.sh [TEST_NAME_FILTER]
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
"$root/scripts/install-deps"
cd "$root"
cargo test --release -p infinity --test phase6_drills -- --include-ignored --nocapture --test-threads 1 \
  --skip upload_to_variants_latency "$@"
