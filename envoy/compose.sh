#!/usr/bin/env bash
# The docker-compose harness (envoy/docker-compose.yml) from the host:
#
#   envoy/compose.sh up     images (envoy/images.sh), .run/compose/ (certificates, rendered
#                           configs), `up -d`, then waits until every server and Envoy is ready
#   envoy/compose.sh check  the checks below against the running stack
#   envoy/compose.sh down   `down -v`, then verifies that no container, network or volume of
#                           the project is left (exit 1 if one is)
#   envoy/compose.sh test   up (on free host ports), check, down (down also when a step
#                           fails; logs on failure);
#                           prints how long it took. This is `make compose-test`.
#
# Checks (each a line "compose check: ... ok"; any failure fails the run):
#   gateway (ingress-gateway.yaml): the demo's statuses, as envoy/demo.sh asserts them (the
#         Keycloak-shaped realm's token too, its keys found through OpenID discovery)
#   sidecar (sidecar-inbound.yaml): mTLS with a SPIFFE client certificate from the host
#   mesh: bar/sleep -> its sidecar (mesh-client.yaml) -> mTLS -> foo/httpbin's sidecar
#         (mesh-server-strict.yaml): 200, both SPIFFE identities in x-forwarded-client-cert;
#         a server with the wrong identity refused by the client; plaintext refused by STRICT
#   ipBlocks: client-allowed (.40) 200, client-denied (.41) 403, also with a forged XFF
#   /stats/prometheus of the gateway: meshguard's labelled families, with the counts sent
#
# Environment: ENVOY_IMAGE (default here: meshguard-envoy:local, built from the pip Envoy;
# set it to envoyproxy/envoy:v1.40.0 to use the official image), MESHGUARD_NET (10.212.12),
# COMPOSE (docker compose or docker-compose, found), the host ports of docker-compose.yml.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
state=$root/.run/compose
cli=${MESHGUARD_BIN:-$root/target/release/meshguard}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-meshguard}
export ENVOY_IMAGE=${ENVOY_IMAGE:-meshguard-envoy:local}
export MESHGUARD_NET=${MESHGUARD_NET:-10.212.12}
net=$MESHGUARD_NET
project=$COMPOSE_PROJECT_NAME

if [[ -n "${COMPOSE:-}" ]]; then
  read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  compose=(docker-compose)
fi
dc() { "${compose[@]}" -f "$root/envoy/docker-compose.yml" "$@"; }

command -v jq >/dev/null || { echo "compose: needs jq" >&2; exit 1; }
fails=0
ok() { echo "compose check: $*  ok"; }
bad() {
  echo "compose check: $*  FAILED" >&2
  fails=$((fails + 1))
}
# expect WANT GOT LABEL
expect() { if [[ "$2" == "$1" ]]; then ok "$3 -> $2"; else bad "$3 -> $2, want $1"; fi; }

# curl in a client container (its own address on the compose network); prints the status.
curl_in() {
  local c=$1
  shift
  docker exec "$(dc ps -q "$c")" curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" || true
}
body_in() {
  local c=$1
  shift
  docker exec "$(dc ps -q "$c")" curl -s --max-time 10 "$@" || true
}
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" || true; }

# The host port a service's container port is published on.
host_port() { dc port "$1" "$2" | sed 's/.*://'; }

wait_for() {
  local what=$1 i
  shift
  for i in $(seq 1 300); do
    "$@" && return 0
    sleep 0.2
  done
  echo "compose: $what not ready after 60 s" >&2
  return 1
}
admin_ready() { [[ "$(status "http://$1/ready")" == 200 ]]; }
in_ready() { [[ "$(curl_in "$1" "http://$2/ready")" == 200 ]]; }

prepare() {
  [[ -x "$cli" && -f dist/meshguard.wasm ]] || { echo "compose: run make build first" >&2; exit 1; }
  rm -rf "$state"
  mkdir -p "$state/render" "$state/mesh"
  # sidecar-inbound.yaml: the dev mesh CA, foo/httpbin's server and foo/sleep's client
  # certificates. The mesh pair: one CA, a workload directory per side (file-based SDS).
  "$cli" demo certs --out "$state/certs" >/dev/null
  "$cli" ca init --out "$state/mesh/ca" >/dev/null
  "$cli" ca issue --ca "$state/mesh/ca" --ns foo --sa httpbin --out "$state/mesh/foo/workload" >/dev/null
  "$cli" ca issue --ca "$state/mesh/ca" --ns bar --sa sleep --out "$state/mesh/bar/workload" >/dev/null
  # The policy of gateway-ipblocks: only client-allowed's address.
  cat >"$state/render/ipblocks.json" <<EOF
{
  "workload": {
    "namespace": "istio-system",
    "labels": { "app": "istio-ingressgateway", "istio": "ingressgateway" },
    "rootNamespace": "istio-system"
  },
  "policies": [
    {
      "apiVersion": "security.istio.io/v1",
      "kind": "AuthorizationPolicy",
      "metadata": { "name": "from-client-allowed", "namespace": "istio-system" },
      "spec": {
        "action": "ALLOW",
        "rules": [ { "from": [ { "source": { "ipBlocks": ["$net.40/32"] } } ] } ]
      }
    }
  ]
}
EOF
  "$cli" validate "$state/render/ipblocks.json" >/dev/null
  local render=(cargo run --quiet --example render_envoy --)
  "${render[@]}" envoy/mesh-client.yaml "$state/render/mesh-client.json" \
    --endpoint "httpbin_foo=$net.30:15006" --endpoint "httpbin_bar=$net.30:15006"
  "${render[@]}" envoy/ingress-gateway.yaml "$state/render/gateway-ipblocks.json" \
    --filter "$state/render/ipblocks.json"
}

up() {
  # The local Envoy image only when it is the one used (ENVOY_IMAGE may name the official one).
  if [[ "$ENVOY_IMAGE" == meshguard-envoy:* ]]; then
    IMAGE_TAG=${ENVOY_IMAGE#meshguard-envoy:} bash envoy/images.sh envoy
  fi
  bash envoy/images.sh devtools client
  # A previous run's containers still mount .run/compose: stop them before it is rewritten.
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  prepare
  dc up -d --no-build
  local s
  for s in jwks upstream httpbin; do
    wait_for "$s" test -f "$state/$s/ready"
  done
  wait_for gateway admin_ready "127.0.0.1:$(host_port gateway 9901)"
  wait_for sidecar admin_ready "127.0.0.1:$(host_port upstream 15000)"
  # Unpublished admins: asked from a container on the network (no route from the host needed).
  wait_for gateway-ipblocks in_ready client-allowed "$net.21:9901"
  wait_for mesh-server in_ready client-allowed "$net.30:15000"
  wait_for mesh-client in_ready sleep 127.0.0.1:15000
  echo "compose: up (project $project, network $net.0/24, Envoy image $ENVOY_IMAGE): gateway" \
    "http://127.0.0.1:$(host_port gateway 8080) (admin :$(host_port gateway 9901)), sidecar" \
    "https://localhost:$(host_port upstream 15006) (admin :$(host_port upstream 15000))"
}

check() {
  local gw url tok
  gw=127.0.0.1:$(host_port gateway 8080)
  url=http://$gw/headers
  tok() { cat "$state/jwks/$1"; }

  # The demo (envoy/demo.sh's checks), through the published gateway port.
  expect 200 "$(status -H "Authorization: Bearer $(tok token)" "$url")" "gateway: valid token"
  expect 403 "$(status "$url")" "gateway: no token"
  expect 401 "$(status -H "Authorization: Bearer $(tok token-invalid)" "$url")" "gateway: invalid token"
  expect 403 "$(status -H "Authorization: Bearer $(tok token)" "http://$gw/admin")" "gateway: /admin, group users"
  expect 200 "$(status -H "Authorization: Bearer $(tok token-admin)" "http://$gw/admin")" "gateway: /admin, group admins"
  expect 200 "$(status -H "Authorization: Bearer $(tok token-keycloak)" "$url")" "gateway: Keycloak realm token"
  local stats
  stats=$(curl -s --max-time 10 "http://127.0.0.1:$(host_port gateway 9901)/stats" || true)
  if grep -q 'openid-configuration;.;result=.=success;.;meshguard_jwks_fetch_total: [1-9]' <<<"$stats"; then
    ok "gateway: realm keys fetched through its OpenID discovery document"
  else
    bad "gateway: no key fetch through the realm's discovery document"
  fi
  local echoed
  echoed=$(curl -s --max-time 10 -H "Authorization: Bearer $(tok token)" "$url" || true)
  if [[ "$(jq -r '.path' <<<"$echoed" 2>/dev/null)" == /headers &&
    "$(jq -r '.headers.authorization // "none"' <<<"$echoed")" == none ]]; then
    ok "gateway: the upstream got the request without the token"
  else
    bad "gateway: upstream echo: ${echoed:0:200}"
  fi

  # sidecar-inbound.yaml from the host: mTLS with foo/sleep's SPIFFE certificate.
  local sc=127.0.0.1:$(host_port upstream 15006) c=$state/certs
  expect 200 "$(status --cacert "$c/ca.pem" --cert "$c/sleep.pem" --key "$c/sleep-key.pem" \
    "https://localhost:${sc#*:}/headers")" "sidecar: mTLS as spiffe://cluster.local/ns/foo/sa/sleep"
  expect 000 "$(status --cacert "$c/ca.pem" "https://localhost:${sc#*:}/headers")" "sidecar: TLS without a client certificate"
  expect 403 "$(status "http://$sc/headers")" "sidecar: plaintext (PeerAuthentication STRICT)"

  # The mesh: bar/sleep's curl -> its sidecar (127.0.0.1:15001 in its namespace) -> mTLS ->
  # foo/httpbin's sidecar at .30 -> the app. The app sees both identities in XFCC.
  local xfcc
  expect 200 "$(curl_in sleep -H 'host: httpbin.foo' http://127.0.0.1:15001/headers)" \
    "mesh: bar/sleep -> foo/httpbin over mTLS"
  xfcc=$(body_in sleep -H 'host: httpbin.foo' http://127.0.0.1:15001/headers |
    jq -r '.headers["x-forwarded-client-cert"] // "none"' 2>/dev/null || true)
  if [[ "$xfcc" == *"By=spiffe://cluster.local/ns/foo/sa/httpbin;"* &&
    "$xfcc" == *"URI=spiffe://cluster.local/ns/bar/sa/sleep"* ]]; then
    ok "mesh: x-forwarded-client-cert: $xfcc"
  else
    bad "mesh: x-forwarded-client-cert: ${xfcc:0:400}"
  fi
  # httpbin.bar's cluster accepts only spiffe://cluster.local/ns/bar/sa/httpbin: foo's
  # sidecar presents ns/foo/sa/httpbin, so the client sidecar refuses the connection.
  expect 503 "$(curl_in sleep -H 'host: httpbin.bar' http://127.0.0.1:15001/headers)" \
    "mesh: server with the wrong SPIFFE identity refused by the client"
  expect 000 "$(curl_in sleep "http://$net.30:15006/headers")" "mesh: plaintext to the STRICT server"
  local handshakes
  handshakes=$(body_in sleep "http://127.0.0.1:15000/stats?filter=^cluster.httpbin_foo.ssl.handshake$" |
    sed -n 's/.*: //p')
  if [[ "${handshakes:-0}" -ge 1 ]]; then ok "mesh: client sidecar TLS handshakes to foo: $handshakes"; else bad "mesh: no TLS handshake counted ($handshakes)"; fi

  # ipBlocks against the real TCP peer: two containers, two addresses.
  local ipb=http://$net.21:8080/headers
  expect 200 "$(curl_in client-allowed "$ipb")" "ipBlocks: client-allowed ($net.40)"
  expect 403 "$(curl_in client-denied "$ipb")" "ipBlocks: client-denied ($net.41)"
  expect 403 "$(curl_in client-denied -H "x-forwarded-for: $net.40" "$ipb")" \
    "ipBlocks: client-denied with x-forwarded-for: $net.40"

  # Prometheus: meshguard's labelled counters on the gateway (stats_tags in the shipped
  # config), with what was sent above: 3 requests allowed by a policy at least, 2 denied,
  # 3 verified tokens, 1 refused.
  local prom
  sleep 0.5 # the filter adds its counters to Envoy's stats on its 250 ms tick
  prom=$(curl -s --max-time 10 "http://127.0.0.1:$(host_port gateway 9901)/stats/prometheus" || true)
  # Sum of a family's samples whose label set contains $2 (e.g. result="allowed").
  family() {
    awk -v m="$1" -v l="$2" '{ n = $1; sub(/\{.*/, "", n) } n == m && index($1, l) { s += $2 } END { print s + 0 }' <<<"$prom"
  }
  local check name labels want got
  for check in 'meshguard_policy_total result="allowed" 3' 'meshguard_policy_total result="denied" 2' \
    'meshguard_jwt_total status="Ok" 3'; do
    read -r name labels want <<<"$check"
    got=$(family "$name" "$labels")
    if [[ "$got" -ge "$want" ]]; then ok "prometheus: $name{$labels} $got"; else bad "prometheus: $name{$labels} $got, want >= $want"; fi
  done
  local refused=$(($(family meshguard_jwt_total '') - $(family meshguard_jwt_total 'status="Ok"') - $(family meshguard_jwt_total 'status="JwtMissed"')))
  if ((refused >= 1)); then ok "prometheus: refused tokens by status: $refused"; else bad "prometheus: no refused token counted"; fi
  grep -q '^# TYPE meshguard_policy_total counter' <<<"$prom" && ok "prometheus: meshguard families typed" ||
    bad "prometheus: no '# TYPE meshguard_policy_total counter' line"
  grep -q '^meshguard_policy_total{.*policy="istio-system/admin-needs-admins-group"' <<<"$prom" &&
    ok "prometheus: the deciding policy is a label" || bad "prometheus: no policy label"

  if ((fails)); then
    echo "compose check: $fails FAILED" >&2
    return 1
  fi
  echo "compose check: all passed"
}

down() {
  dc down -v --remove-orphans --timeout 5
  local left
  left=$(
    docker ps -aq --filter "label=com.docker.compose.project=$project" | sed 's/^/container /'
    docker network ls -q --filter "label=com.docker.compose.project=$project" | sed 's/^/network /'
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | sed 's/^/volume /'
  )
  if [[ -n "$left" ]]; then
    echo "compose: left behind by project $project:" >&2
    echo "$left" >&2
    return 1
  fi
  echo "compose: down, no container, network or volume of project $project left"
}

# On the way out, whatever happened: logs if something failed, down, the time taken.
finish() {
  local rc=$1
  trap - EXIT
  if ((rc)); then
    dc ps >&2 || true
    dc logs --no-color --tail 40 >&2 || true
  fi
  down || rc=1
  echo "compose-test: $( ((rc)) && echo FAILED || echo passed) in $(($(date +%s) - started)) s"
  exit "$rc"
}

run_test() {
  started=$(date +%s)
  # Free host ports unless asked otherwise: another demo may hold 8080 on this machine.
  export MESHGUARD_GATEWAY_PORT=${MESHGUARD_GATEWAY_PORT-} MESHGUARD_GATEWAY_ADMIN_PORT=${MESHGUARD_GATEWAY_ADMIN_PORT-}
  export MESHGUARD_SIDECAR_PORT=${MESHGUARD_SIDECAR_PORT-} MESHGUARD_SIDECAR_ADMIN_PORT=${MESHGUARD_SIDECAR_ADMIN_PORT-}
  trap 'finish $?' EXIT
  up
  check
}

case ${1:-} in
  up) up ;;
  check) check ;;
  down) down ;;
  test) run_test ;;
  *) echo "usage: envoy/compose.sh up|check|down|test" >&2; exit 2 ;;
esac
