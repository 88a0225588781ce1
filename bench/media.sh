#!/usr/bin/env bash
# Compares photo-variant throughput of infinity-media with libvips' vipsthumbnail.
#
# Both make the 1280, 640 and 160 pixel variants (longest side, never enlarged,
# JPEG quality 82 for opaque output) of every file in the test photo folder,
# single-threaded, in the same run on the same machine. vipsthumbnail runs once
# per size per file, as a thumbnailing job would call it; infinity-media decodes
# each file once and makes all three sizes from that decode. Each side runs
# ROUNDS times and its fastest round counts.
#
# Usage: bench/media.sh [IMAGE_DIR]   (default: ../shared/testdata/images)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
images="${1:-$root/../shared/testdata/images}"
rounds="${ROUNDS:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-media}"

if ! command -v vipsthumbnail >/dev/null || ! command -v bc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvips-tools bc >/dev/null
fi

cargo build --release -p infinity-media --example variants --manifest-path "$root/Cargo.toml"
variants="$CARGO_TARGET_DIR/release/examples/variants"
mapfile -t files < <(find "$images" -maxdepth 1 -type f | sort)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# One thread each: libvips through VIPS_CONCURRENCY, infinity-media by design.
export VIPS_CONCURRENCY=1

run_vips() {
    for file in "${files[@]}"; do
        name="$(basename "${file%.*}")"
        for size in 1280 640 160; do
            vipsthumbnail "$file" --size "${size}x${size}>" \
                -o "$work/vips-$name-$size.jpg[Q=82,strip]" 2>/dev/null
        done
    done
}

run_infinity() {
    "$variants" --out "$work/infinity" "${files[@]}" >/dev/null
}

# Prints the fastest of $rounds runs of a function, in seconds.
fastest() {
    local best=""
    for _ in $(seq "$rounds"); do
        local start end elapsed
        start=$(date +%s.%N)
        "$1"
        end=$(date +%s.%N)
        elapsed=$(echo "$end - $start" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$elapsed < $best" | bc -l)" = 1 ]; then
            best=$elapsed
        fi
    done
    echo "$best"
}

vips_seconds=$(fastest run_vips)
infinity_seconds=$(fastest run_infinity)
count=${#files[@]}

printf 'files: %d, sizes: 1280 640 160, rounds: %d (fastest counts), threads: 1\n' "$count" "$rounds"
printf 'vipsthumbnail %s: %.3f s (%.2f files/s)\n' \
    "$(vipsthumbnail --vips-version | head -1)" "$vips_seconds" "$(echo "$count / $vips_seconds" | bc -l)"
printf 'infinity-media: %.3f s (%.2f files/s)\n' \
    "$infinity_seconds" "$(echo "$count / $infinity_seconds" | bc -l)"
printf 'throughput ratio infinity/vipsthumbnail: %.2f\n' "$(echo "$vips_seconds / $infinity_seconds" | bc -l)"
