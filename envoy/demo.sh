#!/usr/bin/env bash
# The demo behind `make run`: meshguard's dev servers (JWKS + echo upstream) and the pip Envoy
# running envoy/ingress-gateway.yaml with dist/meshguard.wasm, all on 127.0.0.1.
# Prints ready-to-paste curl commands; Ctrl-C stops everything this script started.
#
# Environment (all optional):
#   MESHGUARD_DEMO_PORT=8080  MESHGUARD_DEMO_ADMIN_PORT=9901   Envoy's listener and admin
#   MESHGUARD_DEMO_DIR=.run/demo     tokens, rendered config, logs
#   MESHGUARD_BIN, ENVOY_BIN         the meshguard CLI and Envoy to use
#   MESHGUARD_DEMO_CHECK=1           run the curls, check the statuses, stop (for CI)
#   MESHGUARD_DEMO_ROTATE_AFTER=60s  the Keycloak-shaped realm publishes a second key (and
#   MESHGUARD_DEMO_RETIRE_AFTER=180s signs token-keycloak with it 30 s later), then retires the first
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${MESHGUARD_BIN:-$root/target/release/meshguard}
envoy=${ENVOY_BIN:-$root/.venv/bin/envoy}
port=${MESHGUARD_DEMO_PORT:-8080}
admin=${MESHGUARD_DEMO_ADMIN_PORT:-9901}
dir=${MESHGUARD_DEMO_DIR:-$root/.run/demo}
check=${MESHGUARD_DEMO_CHECK:-0}

for f in "$bin" "$envoy" "$root/dist/meshguard.wasm"; do
  [[ -x "$f" || -f "$f" ]] || { echo "demo: missing $f (run: make setup build)" >&2; exit 1; }
done

rm -rf "$dir"
mkdir -p "$dir"
pids=()
# Stops every background job of this script (`jobs -p`, so also one started a moment before
# its pid was recorded): SIGTERM, then SIGKILL for anything still there after 5 s. A second
# Ctrl-C while it runs must not cut it short.
cleanup() {
  trap '' INT TERM HUP
  local children alive
  children=$(jobs -p)
  [[ -n "$children" ]] || return 0
  # shellcheck disable=SC2086
  kill $children 2>/dev/null || true
  for _ in $(seq 1 50); do
    alive=0
    for pid in $children; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $children 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
# Ctrl-C in a terminal reaches every process of the foreground group (make, this script, and
# the servers, which ignore it as background jobs); SIGTERM is what make forwards when it is
# terminated itself; SIGHUP is a closed terminal. Each ends the script, and so runs cleanup.
trap 'echo; echo "demo: stopping"; exit 130' INT TERM HUP
# If this script dies without running its traps (SIGKILL), a watchdog stops the servers it
# started; `meshguard demo serve` also exits by itself once its parent is gone.
watchdog() {
  local script=$1
  shift
  while kill -0 "$script" 2>/dev/null; do sleep 0.5; done
  kill "$@" 2>/dev/null || true
}

"$bin" demo serve --out "$dir" --config envoy/ingress-gateway.yaml \
  --wasm dist/meshguard.wasm --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
  --rotate-after "${MESHGUARD_DEMO_ROTATE_AFTER:-60s}" --retire-after "${MESHGUARD_DEMO_RETIRE_AFTER:-180s}" \
  2>"$dir/devservers.log" &
pids+=($!)
for _ in $(seq 1 300); do
  [[ -f "$dir/ready" ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dir/devservers.log" >&2; exit 1; }
  sleep 0.1
done
[[ -f "$dir/ready" ]] || { echo "demo: dev servers did not start" >&2; exit 1; }

"$envoy" -c "$dir/envoy.json" --disable-hot-restart --concurrency 2 -l info \
  --log-path "$dir/envoy.log" >"$dir/envoy.stdout" 2>&1 &
pids+=($!)
watchdog $$ "${pids[@]}" &
for _ in $(seq 1 600); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/ready" || true)" == 200 ]] && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "demo: envoy exited; its log:" >&2
    tail -n 40 "$dir/envoy.log" "$dir/envoy.stdout" >&2 || true
    exit 1
  fi
  sleep 0.1
done

url="http://127.0.0.1:$port/headers"
cat <<EOF

meshguard demo is up: Envoy on 127.0.0.1:$port (admin 127.0.0.1:$admin), JWKS and upstream
from 'meshguard demo serve'. Files (tokens, envoy.json, logs) are in $dir.

  # valid token -> 200 (the upstream echoes the request it received; the token is removed)
  curl -i -H "Authorization: Bearer \$(cat $dir/token)" $url

  # no token -> 403 RBAC: access denied (AuthorizationPolicy require-jwt)
  curl -i $url

  # invalid token (bad signature) -> 401 Jwt verification fails
  curl -i -H "Authorization: Bearer \$(cat $dir/token-invalid)" $url

  # DENY policy: /admin needs the admins group -> 403, then 200 with token-admin
  curl -i -H "Authorization: Bearer \$(cat $dir/token)" http://127.0.0.1:$port/admin
  curl -i -H "Authorization: Bearer \$(cat $dir/token-admin)" http://127.0.0.1:$port/admin

  # meshguard's counters
  curl -s http://127.0.0.1:$admin/stats | grep meshguard

EOF

# The Keycloak-shaped realm (filters/demo.json: RequestAuthentication keycloak-jwt, no jwksUri).
realm_issuer=$(sed -nE 's/.*"keycloak":[{][^}]*"issuer":"([^"]+)".*/\1/p' "$dir/ready")
jwks_addr=$(sed -nE 's/.*"jwks":"([^"]+)".*/\1/p' "$dir/ready")
if [[ -n "$realm_issuer" ]]; then
  realm_path=/${realm_issuer#http://*/}
  cat <<EOF
  # Keycloak-shaped realm $realm_issuer: its RequestAuthentication has no
  # jwksUri, so meshguard reads the realm's OpenID discovery document for its jwks_uri
  # (.../protocol/openid-connect/certs) -> 200. Key rotation: a second key appears after
  # ${MESHGUARD_DEMO_ROTATE_AFTER:-60s}, token-keycloak is re-signed with it 30 s later (still 200: meshguard
  # refetches on the unknown kid) and the first key is retired after ${MESHGUARD_DEMO_RETIRE_AFTER:-180s}.
  curl -i -H "Authorization: Bearer \$(cat $dir/token-keycloak)" $url

  # the realm's discovery document and key set, from the demo's JWKS server
  curl -s http://$jwks_addr$realm_path/.well-known/openid-configuration
  curl -s http://$jwks_addr$realm_path/protocol/openid-connect/certs

EOF
fi

if [[ "$check" == 1 ]]; then
  fails=0
  # expect STATUS LABEL TOKEN_FILE|- URL (labels only: tokens are never printed)
  expect() {
    local want=$1 label=$2 token=$3 url=$4 got
    local auth=()
    [[ "$token" == - ]] || auth=(-H "Authorization: Bearer $(cat "$dir/$token")")
    got=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "$url" || true)
    if [[ "$got" == "$want" ]]; then
      echo "demo check: $label -> $got ok"
    else
      echo "demo check: $label -> $got, want $want: FAILED" >&2
      fails=$((fails + 1))
    fi
  }
  expect 200 "valid token" token "$url"
  expect 403 "no token" - "$url"
  expect 401 "invalid token" token-invalid "$url"
  expect 403 "/admin, group users" token "http://127.0.0.1:$port/admin"
  expect 200 "/admin, group admins" token-admin "http://127.0.0.1:$port/admin"
  if [[ -n "$realm_issuer" ]]; then
    expect 200 "Keycloak realm token" token-keycloak "$url"
    # The realm's key set is counted under its discovery document (the source of its jwks_uri).
    fetched=$(curl -s "http://127.0.0.1:$admin/stats" |
      grep -c 'openid-configuration;.;result=.=success;.;meshguard_jwks_fetch_total: [1-9]' || true)
    if ((fetched > 0)); then
      echo "demo check: realm keys fetched through its OpenID discovery document ok"
    else
      echo "demo check: no successful key fetch through the realm's discovery document: FAILED" >&2
      curl -s "http://127.0.0.1:$admin/stats" | grep meshguard_jwks >&2 || true
      fails=$((fails + 1))
    fi
  fi
  if ((fails)); then tail -n 40 "$dir/envoy.log" >&2; exit 1; fi
  echo "demo check: all expected statuses"
  exit 0
fi

echo "Press Ctrl-C to stop."
wait
