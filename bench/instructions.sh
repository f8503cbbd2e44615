#!/bin/bash
# User-space instructions per request of a pcce-proxy binary, counted by callgrind.
#
# Instruction counts do not depend on what else the machine is doing, so two builds can
# be compared on a busy machine where CPU times cannot. Set-up, once (it leaves the
# stand-in Console's and pcce-proxy's configs in a temp directory it names):
#
#   python3 bench/bench.py --quick --targets pcce-proxy --connections 1 \
#       --refresh-duration 0 --keep
#
# Then, for each binary:
#
#   bench/instructions.sh /tmp/pcce-bench-XXXX path/to/pcce-proxy [connections]
#
# It starts the stand-in Console (nginx) and the binary under callgrind, warms up for
# 3 s, counts 10 s of wrk load, and prints requests, instructions, and their ratio.
# Everything listens on the loopback ports recorded in the kept configs. It needs
# valgrind (`apt-get install valgrind`) besides what bench/run.sh installs.
set -euo pipefail

dir=${1:?usage: instructions.sh KEPT_DIR BINARY [CONNECTIONS]}
bin=${2:?usage: instructions.sh KEPT_DIR BINARY [CONNECTIONS]}
conns=${3:-16}

for tool in valgrind callgrind_control nginx wrk curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "instructions.sh: $tool is missing: apt-get install valgrind, and run" \
            "bench/run.sh once for the rest" >&2
        exit 1
    fi
done

# As bench.py does: nothing from the caller's environment changes the proxy's
# configuration, and nothing is sent through a proxy off this machine.
unset $(env | grep -o '^PCCE_PROXY_[^=]*' || true)
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

config=$dir/pcce-proxy/config.toml
address=$(sed -n 's/^address = "\(127\.0\.0\.1:[0-9]*\)"$/\1/p' "$config" | head -1)
: "${address:?no listen address in $config: give the directory bench.py --keep named}"
url="http://$address/api/v1/images?limit=50"
out=$(mktemp -d)

upstream=""
proxy=""
cleanup() {
    kill -TERM $proxy $upstream 2>/dev/null || true
    wait $proxy $upstream 2>/dev/null || true
}
trap cleanup EXIT

nginx -c "$dir/upstream/nginx.conf" -p "$dir/upstream" &
upstream=$!
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p" \
    "$bin" -c "$config" run 2>"$out/proxy.log" &
proxy=$!

ready=""
for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "$url"; then
        ready=yes
        break
    fi
    kill -0 "$proxy" 2>/dev/null || break
    sleep 0.3
done
if [ -z "$ready" ]; then
    echo "instructions.sh: the proxy did not answer; see $out/proxy.log" >&2
    exit 1
fi
wrk -t 2 -c "$conns" -d 3s "$url" >/dev/null
callgrind_control -z "$proxy" >/dev/null
requests=$(wrk -t 2 -c "$conns" -d 10s "$url" | awk '/requests in/ {print $1}')
callgrind_control -d "$proxy" >/dev/null
sleep 1

dump=$(ls -t "$out"/callgrind.*.1 | head -1)
instructions=$(sed -n 's/^summary: //p' "$dump")
echo "connections=$conns requests=$requests instructions=$instructions" \
    "per_request=$((instructions / requests))"
echo "profile: $dump (callgrind_annotate reads it)"
