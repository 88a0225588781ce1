#!/usr/bin/env bash
# Phase-1 benchmark: `infinity serve` on PostgreSQL, first on the primary
# alone, then on the primary with two streaming replicas, measured in one
# run on one machine.
#
# It builds the release binaries, starts a private PostgreSQL primary with
# two replicas (infinity-pg-cluster, from the installed server binaries),
# seeds one population through the API, and runs the same read-heavy mix
# against two nodes in turn:
#   single    infinity serve --database PRIMARY
#   replicas  infinity serve --database PRIMARY --replica R1 --replica R2
# Each run has an unmeasured warm-up first, and the two set-ups take turns
# for ROUNDS rounds, so that a slow spell of a shared machine hits both. It
# prints, from /metrics scraped around each measured run and from
# `infinity load --json`:
#   1. the share of database reads that replicas served (target: > 90 %);
#   2. p99 per operation of the mix, replicas against single (the lower
#      p99 of the rounds of each set-up);
#   3. store queries per request.
#
# Usage: bench/phase1.sh
# Environment: USERS (500), ARTICLES (5000), FEED_FOLLOWS (50),
#   MIX_SECONDS (60), WARMUP_SECONDS (20), CONCURRENCY (8), SEED (1),
#   ROUNDS (2),
#   CACHE_ENTRIES (50000, entries per in-process cache of the node),
#   KEEP=1 keeps the work folder (logs, metrics, JSON reports).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
users="${USERS:-500}"
articles="${ARTICLES:-5000}"
feed_follows="${FEED_FOLLOWS:-50}"
mix_seconds="${MIX_SECONDS:-60}"
warmup_seconds="${WARMUP_SECONDS:-20}"
concurrency="${CONCURRENCY:-8}"
seed="${SEED:-1}"
cache_entries="${CACHE_ENTRIES:-50000}"
rounds="${ROUNDS:-2}"

target_replica_share=90

log() { printf '==> %s\n' "$*" >&2; }

missing=()
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v bc >/dev/null || missing+=(bc)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
"$root/scripts/install-deps"

log "cargo build --release -p infinity -p infinity-local"
cargo build --release -p infinity -p infinity-local --manifest-path "$root/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/infinity"
cluster_bin="$CARGO_TARGET_DIR/release/infinity-pg-cluster"

work="$(mktemp -d -t infinity-phase1.XXXXXX)"
cluster_pid=""
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
cleanup() {
    stop_server
    if [ -n "$cluster_pid" ] && kill -0 "$cluster_pid" 2>/dev/null; then
        kill "$cluster_pid"
        wait "$cluster_pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "kept the work folder $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- The cluster --------------------------------------------------------------

log "starting a PostgreSQL primary with two streaming replicas"
"$cluster_bin" --replicas 2 --database infinity >"$work/cluster.out" 2>"$work/cluster.log" &
cluster_pid=$!
for _ in $(seq 600); do
    grep -q '^ready' "$work/cluster.out" && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
    sleep 0.1
done
grep -q '^ready' "$work/cluster.out" || { echo "phase1: the cluster did not start" >&2; exit 1; }
primary="$(awk '$1 == "primary" { print $2 }' "$work/cluster.out")"
mapfile -t replicas < <(awk '$1 == "replica" { print $2 }' "$work/cluster.out")
log "primary $primary, replicas ${replicas[*]}"

# --- Nodes --------------------------------------------------------------------

printf 'cache_entries = %s\n' "$cache_entries" >"$work/infinity.toml"

# Starts `infinity serve` in the work folder with the given flags and sets
# $url from the banner's "serving http://ADDR/api".
start_server() {
    local name="$1"
    shift
    (cd "$work" && exec "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
        --workers 1 "$@" >"$work/$name.out" 2>"$work/$name.log") &
    server_pid=$!
    url=""
    for _ in $(seq 300); do
        url="$(sed -n 's|.*serving \(http://[^ ]*\)/api.*|\1|p' "$work/$name.out" | head -1)"
        [ -n "$url" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$url" ] || { echo "phase1: $name printed no URL" >&2; cat "$work/$name.log" >&2; exit 1; }
    log "$name: $url"
}

state="$work/state.json"

# Runs the warm-up and the measured mix against $url, scraping /metrics
# around the measured part into $work/NAME-before.txt and NAME-after.txt.
measure() {
    local name="$1"
    log "$name: warm-up mix, $warmup_seconds s"
    "$bin" load --target "$url" --reuse "$state" --state "$state" \
        --duration "${warmup_seconds}s" --concurrency "$concurrency" --json --quiet \
        >"$work/warmup-$name.json" 2>"$work/warmup-$name.log"
    curl -sf "$url/metrics" >"$work/$name-before.txt"
    log "$name: measured mix, $mix_seconds s at concurrency $concurrency"
    "$bin" load --target "$url" --reuse "$state" --state "$state" \
        --duration "${mix_seconds}s" --concurrency "$concurrency" --json --quiet \
        >"$work/$name.json" 2>"$work/$name-mix.log"
    curl -sf "$url/metrics" >"$work/$name-after.txt"
}

# Prints the sum of every sample of a counter whose line contains $2 (or
# every sample when $2 is empty), from a /metrics file $3.
counter() {
    awk -v metric="$1" -v needle="$2" '
        index($0, metric "{") == 1 && (needle == "" || index($0, needle)) { n += $NF }
        END { printf "%d", n }' "$3"
}

# Prints the growth of a counter between $3-before.txt and $3-after.txt.
delta() {
    echo $(($(counter "$1" "$2" "$work/$3-after.txt") - $(counter "$1" "$2" "$work/$3-before.txt")))
}

start_server seeding --database "$primary"
log "seeding $users users and $articles articles"
"$bin" load --target "$url" --users "$users" --articles "$articles" \
    --feed-user-follows "$feed_follows" --seed "$seed" --seed-only \
    --state "$state" --json --quiet >"$work/seed.json" 2>"$work/seed.log"
jq -r '.seeding | "seeded in \(.elapsed_s | floor) s: \(.users) users, \(.articles) articles, \(.errors) errors"' "$work/seed.json" >&2
stop_server

replica_flags=()
for replica in "${replicas[@]}"; do
    replica_flags+=(--replica "$replica")
done
for round in $(seq "$rounds"); do
    start_server "single-$round" --database "$primary"
    measure "single-$round"
    stop_server

    start_server "replicas-$round" --database "$primary" "${replica_flags[@]}"
    # Every replica in rotation before the warm-up starts.
    for _ in $(seq 100); do
        in_rotation="$(curl -sf "$url/readyz" | jq '[.checks.database.servers[] | select(.in_rotation)] | length')"
        [ "$in_rotation" = 3 ] && break
        sleep 0.1
    done
    measure "replicas-$round"
    stop_server
done

# --- Report -------------------------------------------------------------------

# Sums delta() over the rounds of set-up $3.
delta_rounds() {
    local total=0
    for round in $(seq "$rounds"); do
        total=$((total + $(delta "$1" "$2" "$3-$round")))
    done
    echo "$total"
}

replica_reads="$(delta_rounds infinity_db_reads_total 'target="replica"' replicas)"
primary_reads="$(delta_rounds infinity_db_reads_total 'target="primary"' replicas)"
all_reads=$((replica_reads + primary_reads))
share="$(echo "scale=1; 100 * $replica_reads / $all_reads" | bc -l)"
single_primary_reads="$(delta_rounds infinity_db_reads_total 'target="primary"' single)"

# Merges the rounds of set-up $1 into $work/$1.json: per operation, the
# count summed and the lower p99.
jq -s '{requests: (map(.requests) | add), errors: (map(.errors) | add),
        operations: (map(.operations[]) | group_by(.name)
          | map({name: .[0].name, count: (map(.count) | add), p99_ms: (map(.p99_ms) | min)}))}' \
    "$work"/single-[0-9]*.json >"$work/single.json"
jq -s '{requests: (map(.requests) | add), errors: (map(.errors) | add),
        operations: (map(.operations[]) | group_by(.name)
          | map({name: .[0].name, count: (map(.count) | add), p99_ms: (map(.p99_ms) | min)}))}' \
    "$work"/replicas-[0-9]*.json >"$work/replicas.json"

echo
echo "Phase 1: PostgreSQL primary alone, then with two streaming replicas ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m))"
echo "population: $users users, $articles articles, feed user follows $feed_follows; seed $seed"
echo "mix: $rounds rounds of $mix_seconds s per set-up at concurrency $concurrency, each after a $warmup_seconds s warm-up, set-ups taking turns"
echo
for name in single replicas; do
    requests="$(jq '.requests' "$work/$name.json")"
    errors="$(jq '.errors' "$work/$name.json")"
    queries="$(delta_rounds infinity_db_queries_total '' "$name")"
    http="$(delta_rounds infinity_http_requests_total '' "$name")"
    echo "$name: $requests requests, $errors errors; $queries store queries for $http HTTP requests ($(echo "scale=3; $queries / $http" | bc -l) per request)"
done
echo "  replay-position checks (replicas runs): $(delta_rounds infinity_db_queries_total 'operation="replay_position"' replicas)"
echo
echo "database reads in the replicas runs: $replica_reads on replicas, $primary_reads on the primary (single runs: $single_primary_reads, all on the primary)"
printf '%-40s %12s %10s %s\n' "figure" "value" "target" "result"
result="$(if [ "$(echo "$share > $target_replica_share" | bc -l)" = 1 ]; then echo pass; else echo FAIL; fi)"
printf '%-40s %11s%% %9s%% %s\n' "reads served by replicas" "$share" "> $target_replica_share" "$result"
echo
printf '%-22s %8s %14s %16s %8s\n' "operation" "count" "single p99 ms" "replicas p99 ms" "ratio"
jq -r --slurpfile single "$work/single.json" '
    .operations[] as $op
    | ($single[0].operations[] | select(.name == $op.name)) as $base
    | [$op.name, $op.count, $base.p99_ms, $op.p99_ms,
       (if $base.p99_ms > 0 then ($op.p99_ms / $base.p99_ms * 100 | floor / 100) else "-" end)]
    | @tsv' "$work/replicas.json" |
    while IFS=$'\t' read -r name count single replicated ratio; do
        printf '%-22s %8s %14s %16s %8s\n' "$name" "$count" "$single" "$replicated" "$ratio"
    done
