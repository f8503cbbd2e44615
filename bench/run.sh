#!/usr/bin/env bash
# Installs what the benchmark needs, builds pcce-proxy in release mode, and
# runs bench/bench.py with the given arguments (e.g. --quick).
set -euo pipefail

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$bench_dir")"

missing=()
for tool in wrk nginx haproxy curl openssl python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "run.sh: installing ${missing[*]} with apt-get" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "run.sh: not root; run: sudo apt-get install wrk nginx haproxy curl openssl python3" >&2
        exit 1
    fi
    apt-get update -qq
    # The benchmark runs its own nginx and HAProxy instances from temp
    # configs; it never uses or starts the system services.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        wrk nginx haproxy curl openssl python3 >/dev/null
fi

if [[ -z "${PCCE_PROXY_BIN:-}" ]]; then
    echo "run.sh: building pcce-proxy (cargo build --release)" >&2
    (cd "$repo_dir" && cargo build --release --quiet)
    export PCCE_PROXY_BIN="${CARGO_TARGET_DIR:-$repo_dir/target}/release/pcce-proxy"
fi

exec python3 "$bench_dir/bench.py" "$@"
