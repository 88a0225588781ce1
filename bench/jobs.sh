#!/usr/bin/env bash
# Job throughput and latency:
#   jobs per second through RabbitMQ (outbox, relay, broker, worker)
#   against the embedded queue, with a handler that does nothing
#   (crates/infinity-broker/tests/throughput.rs), and
#   upload-to-variants latency p50 and p99 at 4 uploads a second through an
#   API node, RabbitMQ and two worker processes
#   (upload_to_variants_latency in crates/infinity/tests/phase6_drills.rs).
#
# Usage: bench/jobs.sh
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
"$root/scripts/install-deps"
cd "$root"
cargo test --release -p infinity-broker --test throughput -- --ignored --nocapture
cargo test --release -p infinity --test phase6_drills -- --ignored --nocapture \
  upload_to_variants_latency
