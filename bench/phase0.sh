#!/usr/bin/env bash
# Phase-0 benchmark: one `infinity serve` process on SQLite, measured in one
# run on one machine.
#
# It builds the release binary, starts a server on a free loopback port with a
# fresh data folder, seeds it through the API with `infinity load --seed-only`
# and prints five figures against their targets:
#   1. seeding time (reported, no target; over 10 minutes is flagged);
#   2. cached GET /api/articles/{slug} throughput divided by the throughput of
#      GET /bench/bare, a handler that returns the same bytes from memory
#      behind the same middleware (wrk, each side twice, interleaved, the best
#      run of each counts);
#   3. p99 of GET /api/articles/feed for the user who follows exactly 100
#      others (operation feed_100 of the steady mix);
#   4. database queries per GET /api request during the steady mix, from
#      /metrics scraped before and after, with the count per store operation;
#   5. resident memory (VmRSS) idle, idle after seeding and peak under the mix.
#
# Usage: bench/phase0.sh
# Environment: USERS (1000), ARTICLES (50000), FEED_FOLLOWS (100),
#   MIX_SECONDS (60), WARMUP_SECONDS (30, an unmeasured mix run first),
#   CONCURRENCY (8, load generator workers),
#   WRK_THREADS (2), WRK_CONNECTIONS (16), WRK_SECONDS (10),
#   SEED (1, the population's random seed),
#   KEEP=1 keeps the work folder (data, state file, logs) after the run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
users="${USERS:-1000}"
articles="${ARTICLES:-50000}"
feed_follows="${FEED_FOLLOWS:-100}"
mix_seconds="${MIX_SECONDS:-60}"
warmup_seconds="${WARMUP_SECONDS:-30}"
concurrency="${CONCURRENCY:-8}"
wrk_threads="${WRK_THREADS:-2}"
wrk_connections="${WRK_CONNECTIONS:-16}"
wrk_seconds="${WRK_SECONDS:-10}"
seed="${SEED:-1}"

# Targets. Seeding has none, but a seeding run over this many seconds is
# flagged for investigation.
target_ratio=0.5
target_feed_p99_ms=20
target_queries_per_read=0.05
target_idle_rss_mb=50
seed_warn_seconds=600

log() { printf '==> %s\n' "$*" >&2; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
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

log "cargo build --release -p infinity"
cargo build --release -p infinity --manifest-path "$root/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/infinity"

work="$(mktemp -d -t infinity-phase0.XXXXXX)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "kept the work folder $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- Start-up ---------------------------------------------------------------

# Port 0 lets the kernel pick a free port, and the banner's first line names
# it: "Infinity <version> serving http://127.0.0.1:PORT/api". The server runs
# in the work folder, so no ./infinity.toml of the caller applies.
(cd "$work" && exec "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
    --bench-routes >"$work/server.out" 2>"$work/server.log") &
server_pid=$!
url=""
for _ in $(seq 100); do
    url="$(sed -n 's|.*serving \(http://[^ ]*\)/api.*|\1|p' "$work/server.out" | head -1)"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "phase0: the server printed no URL within 10 s; its log follows" >&2
    cat "$work/server.log" >&2
    exit 1
fi
log "server $server_pid listening on $url (data in $work/data)"

# Prints the server's resident set size in MB (VmRSS of /proc/PID/status).
rss_mb() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$server_pid/status"
}

sleep 2
rss_idle="$(rss_mb)"
log "resident memory idle after start-up: $rss_idle MB"

# --- Seeding ----------------------------------------------------------------

# Prints the number of requests with a given method, route and status from a
# /metrics text on stdin.
http_count() {
    awk -v m="method=\"$1\"" -v r="route=\"$2\"" -v s="status=\"$3\"" '
        /^infinity_http_requests_total\{/ && index($0, m) && index($0, r) && index($0, s) {
            n += $NF
        }
        END { printf "%d", n }'
}

state="$work/state.json"
log "seeding $users users and $articles articles (feed user follows $feed_follows)"
seed_started=$(date +%s)
"$bin" load --target "$url" --users "$users" --articles "$articles" \
    --feed-user-follows "$feed_follows" --seed "$seed" --seed-only \
    --state "$state" --json --quiet >"$work/seed.json" 2>"$work/seed.log" &
seed_pid=$!
ticks=0
while kill -0 "$seed_pid" 2>/dev/null; do
    sleep 1
    ticks=$((ticks + 1))
    if [ $((ticks % 30)) = 0 ]; then
        created="$(curl -sf "$url/metrics" | http_count POST /api/articles 201)"
        log "seeding: $ticks s, $created of $articles articles created"
    fi
done
wait "$seed_pid" || { cat "$work/seed.log" >&2; exit 1; }
seed_seconds=$(($(date +%s) - seed_started))
jq -r '.seeding | "seeded in \(.elapsed_s | floor) s: \(.users) users, \(.follows) follows, \(.articles) articles, \(.comments) comments, \(.favorites) favourites, \(.errors) errors"' "$work/seed.json" >&2
seed_errors="$(jq '.seeding.errors' "$work/seed.json")"
seeded_articles="$(jq '.seeding.articles' "$work/seed.json")"
if [ "$seed_seconds" -gt "$seed_warn_seconds" ]; then
    log "WARNING: seeding took $seed_seconds s, over $seed_warn_seconds s"
fi

sleep 5
rss_seeded="$(rss_mb)"
log "resident memory idle after seeding: $rss_seeded MB"

# --- Cached article against the bare handler --------------------------------

# The most popular article of the population (index 0 of the Zipf order).
slug="$(jq -r '.articles[0].slug' "$state")"
curl -sf "$url/api/articles/$slug" -o "$work/article.json"
curl -sf -X PUT --data-binary "@$work/article.json" "$url/bench/bare"
curl -sf "$url/bench/bare" -o "$work/bare.json"
if ! cmp -s "$work/article.json" "$work/bare.json"; then
    echo "phase0: GET /bench/bare does not return the article's bytes" >&2
    exit 1
fi
log "article $slug: $(wc -c <"$work/article.json") bytes"

# Prints wrk's requests per second for one URL.
wrk_rps() {
    wrk -t"$wrk_threads" -c"$wrk_connections" -d"$2" "$1" | awk '/^Requests\/sec:/ { print $2 }'
}

# Prints the larger of two decimal numbers.
max_of() {
    if [ "$(echo "$1 > $2" | bc -l)" = 1 ]; then echo "$1"; else echo "$2"; fi
}

# A short warm-up fills the caches and the connection pools of both sides.
wrk_rps "$url/api/articles/$slug" 2s >/dev/null
wrk_rps "$url/bench/bare" 2s >/dev/null
article_rps=0
bare_rps=0
for round in 1 2; do
    rps="$(wrk_rps "$url/api/articles/$slug" "${wrk_seconds}s")"
    log "round $round: GET /api/articles/{slug} $rps req/s"
    article_rps="$(max_of "$article_rps" "$rps")"
    rps="$(wrk_rps "$url/bench/bare" "${wrk_seconds}s")"
    log "round $round: GET /bench/bare $rps req/s"
    bare_rps="$(max_of "$bare_rps" "$rps")"
done
ratio="$(echo "scale=3; $article_rps / $bare_rps" | bc -l)"

# --- Steady mix -------------------------------------------------------------

# A warm-up run of the same mix first, so the measured run sees the caches in
# the steady state rather than cold after seeding.
log "warm-up mix: ${warmup_seconds} s at concurrency $concurrency"
"$bin" load --target "$url" --reuse "$state" --state "$state" \
    --duration "${warmup_seconds}s" --concurrency "$concurrency" --json --quiet \
    >"$work/warmup.json" 2>"$work/warmup.log"

curl -sf "$url/metrics" >"$work/metrics-before.txt"
log "steady mix: $mix_seconds s at concurrency $concurrency"
"$bin" load --target "$url" --reuse "$state" --state "$state" \
    --duration "${mix_seconds}s" --concurrency "$concurrency" --json --quiet \
    >"$work/mix.json" 2>"$work/mix.log" &
mix_pid=$!
rss_peak=0
while kill -0 "$mix_pid" 2>/dev/null; do
    rss_peak="$(max_of "$rss_peak" "$(rss_mb)")"
    sleep 0.2
done
wait "$mix_pid" || { cat "$work/mix.log" >&2; exit 1; }
curl -sf "$url/metrics" >"$work/metrics-after.txt"

jq -r '"mix: \(.requests) requests in \(.elapsed_s * 10 | floor / 10) s, \(.errors) errors, \(.rate_limited) rate limited"' "$work/mix.json" >&2
mix_errors="$(jq '.errors' "$work/mix.json")"
feed_p99="$(jq --arg name "feed_$feed_follows" '.operations[] | select(.name == $name) | .p99_ms' "$work/mix.json")"
feed_count="$(jq --arg name "feed_$feed_follows" '.operations[] | select(.name == $name) | .count' "$work/mix.json")"

# Prints one "value count" line per value of a label ($2), summing the
# samples of a counter ($1) in a /metrics text on stdin.
sum_by_label() {
    awk -v metric="$1" -v label="$2" '
        index($0, metric "{") == 1 {
            match($0, label "=\"[^\"]*\"")
            key = substr($0, RSTART + length(label) + 2, RLENGTH - length(label) - 3)
            sums[key] += $NF
        }
        END { for (key in sums) printf "%s %d\n", key, sums[key] }'
}

# Prints "operation delta" for every store operation that ran during the mix.
query_deltas() {
    join -a 2 -e 0 -o 0,1.2,2.2 \
        <(sum_by_label infinity_db_queries_total operation <"$work/metrics-before.txt" | sort) \
        <(sum_by_label infinity_db_queries_total operation <"$work/metrics-after.txt" | sort) |
        awk '$3 - $2 > 0 { print $1, $3 - $2 }'
}

# GET requests under /api, summed over routes and statuses.
get_api_requests() {
    awk '/^infinity_http_requests_total\{/ && index($0, "method=\"GET\"") && index($0, "route=\"/api") { n += $NF }
         END { printf "%d", n }' "$1"
}

# Store operations that write, and those of the embedded job queue, which
# the server's workers run in the background whatever the traffic. Every
# other operation the store counts is a read.
write_operations=" create_user update_user follow unfollow favorite unfavorite create_article \
update_article delete_article add_comment delete_comment create_session delete_session \
delete_sessions_except create_upload finish_upload fail_upload "
job_operations=" enqueue take_job extend_job complete_job fail_job retry_job discard_job \
count_jobs list_jobs "

query_deltas | sort -k2,2nr >"$work/queries.txt"
reads=$(($(get_api_requests "$work/metrics-after.txt") - $(get_api_requests "$work/metrics-before.txt")))
all_queries="$(awk '{ n += $2 } END { printf "%d", n }' "$work/queries.txt")"
read_queries=0
write_queries=0
job_queries=0
while read -r operation count; do
    if [[ "$write_operations" == *" $operation "* ]]; then
        write_queries=$((write_queries + count))
    elif [[ "$job_operations" == *" $operation "* ]]; then
        job_queries=$((job_queries + count))
    else
        read_queries=$((read_queries + count))
    fi
done <"$work/queries.txt"
queries_per_read="$(echo "scale=4; $read_queries / $reads" | bc -l)"
all_queries_per_read="$(echo "scale=4; $all_queries / $reads" | bc -l)"

# --- Report -----------------------------------------------------------------

# Prints "pass" when "$1 $2 $3" is true (for example 0.61 >= 0.5), else "FAIL".
verdict() {
    if [ "$(echo "$1 $2 $3" | bc -l)" = 1 ]; then echo pass; else echo FAIL; fi
}

echo
echo "Phase 0: one process ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m))"
echo "population: $users users, $seeded_articles articles, feed user follows $feed_follows; seed $seed"
echo "seeding: $seed_seconds s ($(echo "scale=1; $seeded_articles / $seed_seconds" | bc -l) articles/s), $seed_errors errors"
echo
echo "GET /api/articles/{slug} (cached): $article_rps req/s"
echo "GET /bench/bare (same bytes, same middleware): $bare_rps req/s"
echo "  wrk -t$wrk_threads -c$wrk_connections -d${wrk_seconds}s, two interleaved rounds, best of each"
echo
echo "steady mix: $mix_seconds s, concurrency $concurrency, $mix_errors errors"
echo "feed_$feed_follows: $feed_count requests, p99 $feed_p99 ms"
echo "GET /api requests: $reads; store queries: $all_queries ($read_queries reads, $write_queries writes, $job_queries job queue)"
echo "store queries by operation during the mix (operation count per-GET):"
awk -v reads="$reads" '{ printf "  %-24s %8d %8.4f\n", $1, $2, $2 / reads }' "$work/queries.txt"
echo
printf '%-40s %12s %10s %s\n' "figure" "value" "target" "result"
printf '%-40s %12s %10s %s\n' "article/bare throughput ratio" "$ratio" ">= $target_ratio" \
    "$(verdict "$ratio" ">=" "$target_ratio")"
printf '%-40s %12s %10s %s\n' "feed_$feed_follows p99 (ms)" "$feed_p99" "< $target_feed_p99_ms" \
    "$(verdict "$feed_p99" "<" "$target_feed_p99_ms")"
printf '%-40s %12s %10s %s\n' "read queries per GET /api request" "$queries_per_read" \
    "<= $target_queries_per_read" "$(verdict "$queries_per_read" "<=" "$target_queries_per_read")"
printf '%-40s %12s %10s %s\n' "all queries per GET /api request" "$all_queries_per_read" \
    "<= $target_queries_per_read" "$(verdict "$all_queries_per_read" "<=" "$target_queries_per_read")"
printf '%-40s %12s %10s %s\n' "RSS idle after start-up (MB)" "$rss_idle" "< $target_idle_rss_mb" \
    "$(verdict "$rss_idle" "<" "$target_idle_rss_mb")"
printf '%-40s %12s %10s %s\n' "RSS idle after seeding (MB)" "$rss_seeded" "< $target_idle_rss_mb" \
    "$(verdict "$rss_seeded" "<" "$target_idle_rss_mb")"
printf '%-40s %12s %10s %s\n' "RSS peak under the mix (MB)" "$rss_peak" "-" "reported"
printf '%-40s %12s %10s %s\n' "seeding time (s)" "$seed_seconds" "-" \
    "$([ "$seed_seconds" -gt "$seed_warn_seconds" ] && echo "over $seed_warn_seconds s" || echo reported)"
