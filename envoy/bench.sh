#!/usr/bin/env bash
# `make bench`: requests/s of the demo (envoy/ingress-gateway.yaml, valid RS256 token, echo
# upstream) under wrk, side by side with the same Envoy config without the meshguard filter.
# One run each; Envoy gets one worker on core 0, wrk and the upstream share core 1.
#
# Environment: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), MESHGUARD_BIN, ENVOY_BIN,
# BENCH_PORT (18480), BENCH_ADMIN_PORT (19480).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${MESHGUARD_BIN:-$root/target/release/meshguard}
envoy=${ENVOY_BIN:-$root/.venv/bin/envoy}
duration=${BENCH_DURATION:-10s}
conns=${BENCH_CONNECTIONS:-32}
port=${BENCH_PORT:-18480}
admin=${BENCH_ADMIN_PORT:-19480}
dir=$root/.run/bench
command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }

# CPU pinning when possible. taskset execs the command, so $! stays the process to kill.
core0=() core1=()
if command -v taskset >/dev/null && (($(nproc) > 1)); then
  core0=(taskset -c 0) core1=(taskset -c 1)
fi

rm -rf "$dir"
mkdir -p "$dir"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"${core1[@]}" "$bin" demo serve --out "$dir" --config envoy/ingress-gateway.yaml \
  --wasm dist/meshguard.wasm --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
  2>"$dir/devservers.log" &
pids+=($!)
for _ in $(seq 1 300); do [[ -f "$dir/ready" ]] && break; sleep 0.1; done
[[ -f "$dir/ready" ]] || { cat "$dir/devservers.log" >&2; exit 1; }
token=$(cat "$dir/token")
url="http://127.0.0.1:$port/headers"

run() { # run NAME LABEL CONFIG: prints "LABEL requests/s avg-latency non-2xx"
  local name=$1 label=$2 config=$3 envoy_pid out
  "${core0[@]}" "$envoy" -c "$config" --disable-hot-restart --concurrency 1 -l warning \
    >"$dir/$name.envoy.log" 2>&1 &
  envoy_pid=$!
  for _ in $(seq 1 600); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/ready" || true)" == 200 ]] && break
    kill -0 "$envoy_pid" 2>/dev/null || { cat "$dir/$name.envoy.log" >&2; exit 1; }
    sleep 0.1
  done
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
  [[ "$status" == 200 ]] || { echo "bench: $name answers $status" >&2; kill "$envoy_pid"; exit 1; }
  # Warm-up (JWKS fetched, connections pooled), then the measured run.
  "${core1[@]}" wrk -t1 -c"$conns" -d2s -H "Authorization: Bearer $token" "$url" >/dev/null
  out=$("${core1[@]}" wrk -t1 -c"$conns" -d"$duration" -H "Authorization: Bearer $token" "$url")
  echo "$out" >"$dir/$name.wrk.txt"
  kill "$envoy_pid"
  wait "$envoy_pid" 2>/dev/null || true
  # The next variant binds the same ports.
  while curl -s -o /dev/null "http://127.0.0.1:$admin/ready"; do sleep 0.1; done
  local rps lat non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  lat=$(awk '$1 == "Latency" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-28s %12s %12s %10s\n' "$label" "$rps" "$lat" "${non2xx:-0}"
}

echo "wrk -t1 -c$conns -d$duration, Envoy --concurrency 1 (core 0), GET /headers with a valid RS256 token"
printf '%-28s %12s %12s %10s\n' "variant" "requests/s" "avg latency" "non-2xx"
run baseline "envoy without meshguard" "$dir/envoy-baseline.json"
run meshguard "envoy + meshguard" "$dir/envoy.json"
echo "wrk outputs and logs: $dir"
