#!/usr/bin/env bash
# Phase-2 benchmark: the load balancer against HAProxy, and the read-heavy
# mix on 1 node against 2 and 4 nodes behind the balancer, measured in one
# run on one machine.
#
# It builds the release binary and starts, with `infinity up`, a PostgreSQL
# primary with one replica, Redis, 4 API nodes and `infinity lb` over all of
# them on free loopback ports. Beside them it starts:
#   lb-2     a second `infinity lb` over node-1 and node-2;
#   haproxy  HAProxy 2.x over node-1 and node-2, round robin, with the same
#            health checks (GET /readyz every 500 ms, down after 2 failures,
#            up after 3 successes) and 2 retries on another node.
# Then it prints:
#   1. wrk throughput and p99 of GET /api/articles/{slug} through lb-2 and
#      through haproxy, taking turns for ROUNDS rounds (the best round of
#      each counts), and directly against node-1. "added p99" is the p99
#      through a proxy minus the p99 of node-1 alone. The proxies spread the
#      load over two nodes and node-1 takes it all, so on a machine with
#      few cores the difference is the proxy's cost plus or minus the
#      second node's help, not the proxy's cost alone. The CPU time each
#      proxy process used per 1,000 requests, read from /proc, depends far
#      less on what else the machine runs;
#   2. `infinity load` (read-heavy mix, population seeded once) against
#      node-1 directly, lb-2 (2 nodes) and the balancer of `up` (4 nodes):
#      requests/s and p99 per operation.
#
# Usage: bench/phase2.sh
# Environment: ROUNDS (2), WRK_THREADS (2), WRK_CONNECTIONS (32),
#   WRK_SECONDS (15), USERS (200), ARTICLES (1000), MIX_SECONDS (30),
#   WARMUP_SECONDS (5), CONCURRENCY (16), SEED (1), SKIP_MIX=1 skips part 2,
#   KEEP=1 keeps the work folder (logs, configuration, JSON reports).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
rounds="${ROUNDS:-2}"
wrk_threads="${WRK_THREADS:-2}"
wrk_connections="${WRK_CONNECTIONS:-32}"
wrk_seconds="${WRK_SECONDS:-15}"
users="${USERS:-200}"
articles="${ARTICLES:-1000}"
mix_seconds="${MIX_SECONDS:-30}"
warmup_seconds="${WARMUP_SECONDS:-5}"
concurrency="${CONCURRENCY:-16}"
seed="${SEED:-1}"

log() { printf '==> %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v bc >/dev/null || missing+=(bc)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
"$root/scripts/install-deps"

log "cargo build --release -p infinity"
cargo build --release -p infinity --manifest-path "$root/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/infinity"

work="$(mktemp -d -t infinity-phase2.XXXXXX)"
run_dir="$work/run"
lb2_pid=""
haproxy_pid=""
cleanup() {
    for pid in "$lb2_pid" "$haproxy_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ -f "$run_dir/state.json" ]; then
        "$bin" down --run-dir "$run_dir" >/dev/null 2>&1 || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "kept the work folder $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- The topology -------------------------------------------------------------

lb4_port="$(free_port)"
cat >"$work/topology.toml" <<EOF
[nodes]
count = 4
workers = 1
drain_seconds = 2

[database]
engine = "postgres"
replicas = 1

[redis]

[lb]
listen = "127.0.0.1:$lb4_port"
policy = "round-robin"
EOF
log "infinity up: PostgreSQL primary and replica, Redis, 4 nodes, balancer on :$lb4_port"
"$bin" up "$work/topology.toml" --run-dir "$run_dir" >"$work/up.out"
node_address() {
    jq -r --arg name "$1" '.processes[] | select(.name == $name) | .address' "$run_dir/state.json"
}
node1="$(node_address node-1)"
node2="$(node_address node-2)"
log "node-1 $node1, node-2 $node2"

lb2_port="$(free_port)"
lb2_metrics_port="$(free_port)"
"$bin" lb --listen "127.0.0.1:$lb2_port" --metrics-listen "127.0.0.1:$lb2_metrics_port" \
    --backend "$node1" --backend "$node2" 2>"$work/lb-2.log" &
lb2_pid=$!

haproxy_port="$(free_port)"
cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 4096
    nbthread 2

defaults
    mode http
    option http-keep-alive
    retries 2
    option redispatch
    timeout connect 1s
    timeout client 30s
    timeout server 30s

frontend api
    bind 127.0.0.1:$haproxy_port
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    default-server check inter 500 fall 2 rise 3
    server node-1 $node1
    server node-2 $node2
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!

lb4="http://127.0.0.1:$lb4_port"
lb2="http://127.0.0.1:$lb2_port"
haproxy_url="http://127.0.0.1:$haproxy_port"
direct="http://$node1"
for url in "$lb4" "$lb2" "$haproxy_url" "$direct"; do
    for _ in $(seq 100); do
        curl -sf "$url/api/tags" >/dev/null && break
        sleep 0.1
    done
    curl -sf "$url/api/tags" >/dev/null || { echo "phase2: GET $url/api/tags did not return 200" >&2; exit 1; }
done

# --- The population -----------------------------------------------------------

state="$work/state.json"
log "seeding $users users and $articles articles through node-1"
"$bin" load --target "$direct" --users "$users" --articles "$articles" --seed "$seed" \
    --seed-only --state "$state" --json --quiet >"$work/seed.json" 2>"$work/seed.log"
jq -r '.seeding | "seeded in \(.elapsed_s | floor) s: \(.users) users, \(.articles) articles, \(.errors) errors"' "$work/seed.json" >&2
slug="$(jq -r '.articles[0].slug' "$state")"

# --- 1. Balancer against HAProxy ----------------------------------------------

# Prints the CPU time process $1 has used, in clock ticks (user + system).
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Runs wrk against $2 and writes "REQUESTS_PER_SECOND P99_MS ERRORS
# CPU_MS_PER_1000" to $work/wrk-$1.txt, where ERRORS counts non-2xx
# responses and socket errors, and CPU_MS_PER_1000 is the CPU time process
# $3 (the proxy; 0 for none) used per 1,000 requests.
run_wrk() {
    local name="$1" url="$2" pid="$3" before=0 after=0
    [ "$pid" != 0 ] && before="$(cpu_ticks "$pid")"
    wrk -t"$wrk_threads" -c"$wrk_connections" -d"${wrk_seconds}s" --latency "$url" >"$work/wrk-$name.out"
    [ "$pid" != 0 ] && after="$(cpu_ticks "$pid")"
    awk -v ticks="$((after - before))" -v hz="$(getconf CLK_TCK)" '
        function ms(value) {
            if (value ~ /us$/) return substr(value, 1, length(value) - 2) / 1000
            if (value ~ /ms$/) return substr(value, 1, length(value) - 2) + 0
            if (value ~ /s$/) return substr(value, 1, length(value) - 1) * 1000
            return value
        }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { bad += $4 + $6 + $8 + $10 }
        /requests in/ { requests = $1 }
        END {
            cpu = requests > 0 ? ticks * 1000 / hz / requests * 1000 : 0
            printf "%s %.3f %d %.1f\n", rps, p99, bad, cpu
        }' "$work/wrk-$name.out" >"$work/wrk-$name.txt"
}

path="/api/articles/$slug"
log "wrk warm-up"
for url in "$lb2" "$haproxy_url" "$direct"; do
    wrk -t"$wrk_threads" -c"$wrk_connections" -d2s "$url$path" >/dev/null
done
for round in $(seq "$rounds"); do
    log "round $round: wrk ${wrk_seconds} s each through lb, haproxy and to node-1"
    run_wrk "lb-$round" "$lb2$path" "$lb2_pid"
    run_wrk "haproxy-$round" "$haproxy_url$path" "$haproxy_pid"
    run_wrk "direct-$round" "$direct$path" 0
done

# Prints the line of the round with the highest throughput of $1.
best() {
    cat "$work"/wrk-"$1"-[0-9]*.txt | sort -g -r -k1 | head -1
}
read -r lb_rps lb_p99 lb_bad lb_cpu <<<"$(best lb)"
read -r ha_rps ha_p99 ha_bad ha_cpu <<<"$(best haproxy)"
read -r direct_rps direct_p99 direct_bad _ <<<"$(best direct)"

# --- 2. The mix on 1, 2 and 4 nodes -------------------------------------------

mix() {
    local name="$1" url="$2"
    log "$name: warm-up $warmup_seconds s, then the mix for $mix_seconds s at concurrency $concurrency"
    "$bin" load --target "$url" --reuse "$state" --state "$state" --duration "${warmup_seconds}s" \
        --concurrency "$concurrency" --json --quiet >/dev/null 2>"$work/warmup-$name.log"
    "$bin" load --target "$url" --reuse "$state" --state "$state" --duration "${mix_seconds}s" \
        --concurrency "$concurrency" --json --quiet >"$work/mix-$name.json" 2>"$work/mix-$name.log"
}
if [ "${SKIP_MIX:-0}" != 1 ]; then
    mix 1-node "$direct"
    mix 2-nodes "$lb2"
    mix 4-nodes "$lb4"
fi

# --- Report -------------------------------------------------------------------

echo
echo "Phase 2: balancer and nodes ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m), $(haproxy -v | head -1 | awk '{print $1, $2, $3}'))"
echo
echo "1. GET /api/articles/{slug}, wrk -t$wrk_threads -c$wrk_connections, $wrk_seconds s, best of $rounds rounds taken in turns"
printf '%-26s %12s %10s %12s %10s %16s\n' "target" "requests/s" "p99 ms" "added p99" "errors" "proxy CPU ms/1k"
printf '%-26s %12s %10s %12s %10s %16s\n' "node-1 directly" "$direct_rps" "$direct_p99" "-" "$direct_bad" "-"
printf '%-26s %12s %10s %12s %10s %16s\n' "infinity lb (2 nodes)" "$lb_rps" "$lb_p99" \
    "$(echo "$lb_p99 - $direct_p99" | bc -l)" "$lb_bad" "$lb_cpu"
printf '%-26s %12s %10s %12s %10s %16s\n' "haproxy (2 nodes)" "$ha_rps" "$ha_p99" \
    "$(echo "$ha_p99 - $direct_p99" | bc -l)" "$ha_bad" "$ha_cpu"
echo "throughput ratio lb/haproxy: $(echo "scale=3; $lb_rps / $ha_rps" | bc -l)"
echo "p99 ratio lb/haproxy: $(echo "scale=3; $lb_p99 / $ha_p99" | bc -l)"
echo "proxy CPU per request, lb/haproxy: $(echo "scale=3; $lb_cpu / $ha_cpu" | bc -l)"
echo "every round (requests/s p99_ms errors proxy_cpu_ms_per_1k):"
for file in "$work"/wrk-*.txt; do
    printf '  %-12s %s\n' "$(basename "$file" .txt | sed 's/^wrk-//')" "$(cat "$file")"
done
if [ "${SKIP_MIX:-0}" = 1 ]; then
    exit 0
fi
echo
echo "2. infinity load mix ($users users, $articles articles, concurrency $concurrency, $mix_seconds s after a $warmup_seconds s warm-up)"
for name in 1-node 2-nodes 4-nodes; do
    jq -r --arg name "$name" '"\($name): \(.throughput_rps | floor) requests/s, \(.requests) requests, \(.errors) errors"' \
        "$work/mix-$name.json"
done
printf '%-20s %14s %14s %14s\n' "p99 ms" "1 node" "2 nodes (lb)" "4 nodes (lb)"
jq -r -s '
    (.[0].operations | map(.name)) as $names
    | $names[] as $name
    | [$name] + [.[] | (.operations[] | select(.name == $name) | .p99_ms) // "-"]
    | @tsv' "$work/mix-1-node.json" "$work/mix-2-nodes.json" "$work/mix-4-nodes.json" |
    while IFS=$'\t' read -r name one two four; do
        printf '%-20s %14s %14s %14s\n' "$name" "$one" "$two" "$four"
    done
