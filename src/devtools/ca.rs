//! The development CA of the command-line tool (`meshguard ca init|issue`): a mesh root kept
//! in a directory, and workload certificates for `spiffe://<td>/ns/<ns>/sa/<sa>` with a short
//! lifetime. Issuing again into the same directory is rotation.
//!
//! A workload directory has Istio's file names (`cert-chain.pem`, `key.pem`,
//! `root-cert.pem`), each a symlink into `..data/`, itself a symlink to the current
//! `..<serial>/` version — the layout Kubernetes uses for mounted secrets. Rotation writes a
//! new version and swaps `..data` with one `rename`, so a reader (Envoy's file-based SDS with
//! `watched_directory` on the directory) always sees a matching certificate and key.

use crate::certs::{Identity, IssueOptions, MeshCa};
use crate::Result;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default workload certificate lifetime (Istio's default is 24h; shorter here so
/// rotation is exercised).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest lifetime `ca issue` accepts.
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";

/// `ca init`: a new mesh root in `out` (refuses to overwrite an existing one).
pub fn init(out: &Path, trust_domain: &str) -> Result<MeshCa> {
    check_trust_domain(trust_domain)?;
    if out.join("ca-key.pem").exists() {
        return Err(format!(
            "{} already holds a CA (ca-key.pem); remove it first or choose another --out",
            out.display()
        )
        .into());
    }
    let ca = MeshCa::new(trust_domain)?;
    ca.save(out)?;
    Ok(ca)
}

/// What `ca issue` wrote.
#[derive(Debug)]
pub struct IssuedFiles {
    pub spiffe_id: String,
    /// The serial number, lower-case hex without separators.
    pub serial: String,
    pub dir: PathBuf,
}

/// `ca issue`: a workload certificate for `ns`/`sa` signed by the CA in `ca_dir`, written
/// to `out` (created; the previous certificate there, if any, is replaced atomically).
pub fn issue(ca_dir: &Path, ns: &str, sa: &str, ttl: Duration, out: &Path) -> Result<IssuedFiles> {
    check_namespace(ns)?;
    check_service_account(sa)?;
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(format!(
            "ttl {}s out of range (1s..{}d)",
            ttl.as_secs(),
            MAX_TTL.as_secs() / 86400
        )
        .into());
    }
    let ca = MeshCa::load(ca_dir)?;
    // The saved root itself (the loaded CA's certificate is an equivalent re-signing).
    let root = std::fs::read_to_string(ca_dir.join("ca.pem"))?;
    let issued = ca.issue_with(
        &Identity {
            namespace: ns,
            service_account: sa,
            ..Default::default()
        },
        &IssueOptions::ttl(ttl),
    )?;
    let serial = serial_of(&issued.cert_pem)?;
    install(
        out,
        &serial,
        &[
            (CERT_CHAIN, issued.cert_pem.as_str(), false),
            (KEY, issued.key_pem.as_str(), true),
            (ROOT_CERT, root.as_str(), false),
        ],
    )?;
    Ok(IssuedFiles {
        spiffe_id: ca.spiffe_id(ns, sa),
        serial,
        dir: out.to_path_buf(),
    })
}

/// Writes `files` as version `..<version>/` of `out` and makes it current (see module docs).
pub fn install(out: &Path, version: &str, files: &[(&str, &str, bool)]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let name = format!("..{version}");
    let vdir = out.join(&name);
    std::fs::create_dir_all(&vdir)?;
    for (file, content, private) in files {
        let path = vdir.join(file);
        std::fs::write(&path, content)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if *private { 0o600 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    let old = std::fs::read_link(out.join("..data")).ok();
    let tmp = out.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp)?;
    std::fs::rename(&tmp, out.join("..data"))?;
    for (file, _, _) in files {
        let link = out.join(file);
        if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(&format!("..data/{file}"))) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("..data/{file}"), &link)?;
        }
    }
    if let Some(old) = old.filter(|o| o != Path::new(&name)) {
        let _ = std::fs::remove_dir_all(out.join(old));
    }
    Ok(())
}

/// The serial number of a PEM certificate, lower-case hex (as Envoy's admin `/certs` shows).
pub fn serial_of(cert_pem: &str) -> Result<String> {
    use base64::Engine as _;
    let b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64)?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial INTEGER, ..
    let mut pos = 0;
    let enter = |der: &[u8], pos: &mut usize, tag: u8| -> Result<usize> {
        if der.get(*pos) != Some(&tag) {
            return Err("not a DER certificate".into());
        }
        *pos += 1;
        let first = *der.get(*pos).ok_or("truncated certificate")?;
        *pos += 1;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            let mut len = 0usize;
            for _ in 0..n {
                len = (len << 8) | *der.get(*pos).ok_or("truncated certificate")? as usize;
                *pos += 1;
            }
            len
        };
        Ok(len)
    };
    enter(&der, &mut pos, 0x30)?; // Certificate
    enter(&der, &mut pos, 0x30)?; // tbsCertificate
    if der.get(pos) == Some(&0xa0) {
        let len = enter(&der, &mut pos, 0xa0)?;
        pos += len;
    }
    let len = enter(&der, &mut pos, 0x02)?;
    let bytes = der.get(pos..pos + len).ok_or("truncated certificate")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex.trim_start_matches("00").to_string())
}

/// A Go duration (`1h`, `30m`, `90s`, `1h30m`), as Istio's own `--workload-cert-ttl` takes it,
/// through the engine's one duration parser; zero is refused.
pub fn parse_ttl(s: &str) -> Result<Duration> {
    match meshguard_engine::duration::parse(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("bad ttl {s:?}: must be positive").into()),
        Err(e) => Err(format!("bad ttl {s:?}: {e} (e.g. 1h, 90m, 48h)").into()),
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes namespace name: an RFC 1123 label.
pub fn check_namespace(ns: &str) -> Result<()> {
    if dns_label(ns) {
        Ok(())
    } else {
        Err(format!(
            "bad namespace {ns:?}: lower-case letters, digits and '-', at most 63, not starting or ending with '-'"
        )
        .into())
    }
}

/// A Kubernetes service account name: an RFC 1123 subdomain.
pub fn check_service_account(sa: &str) -> Result<()> {
    if sa.len() <= 253 && sa.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(format!(
            "bad service account {sa:?}: lower-case letters, digits, '-' and '.' (RFC 1123 subdomain)"
        )
        .into())
    }
}

/// A SPIFFE trust domain: lower-case letters, digits, '.', '-', '_'.
pub fn check_trust_domain(td: &str) -> Result<()> {
    if !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
    {
        Ok(())
    } else {
        Err(format!("bad trust domain {td:?}: lower-case letters, digits, '.', '-' and '_'").into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::process::Command;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshguard-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// `openssl x509 -noout -text` of a certificate file: an independent X.509 parser.
    fn openssl_text(cert: &Path) -> Option<String> {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(cert)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn openssl_line(cert: &Path, flag: &str) -> Option<String> {
        let out = Command::new("openssl")
            .args(["x509", "-noout", flag, "-in"])
            .arg(cert)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_issue_and_rotate() {
        let dir = tmp("rotate");
        let ca_dir = dir.join("ca");
        init(&ca_dir, "example.org").unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);
        let err = init(&ca_dir, "example.org").err().unwrap().to_string();
        assert!(err.contains("already holds a CA"), "{err}");

        let out = dir.join("bar-sleep");
        let first = issue(&ca_dir, "bar", "sleep", Duration::from_secs(1800), &out).unwrap();
        assert_eq!(first.spiffe_id, "spiffe://example.org/ns/bar/sa/sleep");
        #[cfg(unix)]
        assert_eq!(mode(&out.join(KEY)), 0o600);
        let cert = std::fs::read_to_string(out.join(CERT_CHAIN)).unwrap();
        assert_eq!(serial_of(&cert).unwrap(), first.serial);

        if let Some(text) = openssl_text(&out.join(CERT_CHAIN)) {
            assert!(
                text.contains("URI:spiffe://example.org/ns/bar/sa/sleep"),
                "{text}"
            );
            assert!(text.contains("CN = example.org dev CA"), "{text}");
            // The serial as openssl prints it.
            let serial = openssl_line(&out.join(CERT_CHAIN), "-serial").unwrap();
            assert_eq!(
                serial
                    .trim_start_matches("serial=")
                    .to_lowercase()
                    .trim_start_matches('0'),
                first.serial.trim_start_matches('0')
            );
            // Lifetime: 30 minutes (plus the minute of clock skew) — valid now, not in 1h.
            let check = |secs: &str| {
                Command::new("openssl")
                    .args(["x509", "-noout", "-checkend", secs, "-in"])
                    .arg(out.join(CERT_CHAIN))
                    .status()
                    .unwrap()
                    .success()
            };
            assert!(check("1700"), "valid for the next 1700s");
            assert!(!check("1900"), "expired within 1900s");
            // Chains to the saved root.
            let verify = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca_dir.join("ca.pem"))
                .arg(out.join(CERT_CHAIN))
                .output()
                .unwrap();
            assert!(
                verify.status.success(),
                "{}",
                String::from_utf8_lossy(&verify.stdout)
            );
        }

        // Re-issue = rotation: new serial, new key, same names, old version gone.
        let old_key = std::fs::read_to_string(out.join(KEY)).unwrap();
        let second = issue(&ca_dir, "bar", "sleep", DEFAULT_TTL, &out).unwrap();
        assert_ne!(first.serial, second.serial);
        assert_ne!(std::fs::read_to_string(out.join(KEY)).unwrap(), old_key);
        let cert = std::fs::read_to_string(out.join(CERT_CHAIN)).unwrap();
        assert_eq!(serial_of(&cert).unwrap(), second.serial);
        assert!(!out.join(format!("..{}", first.serial)).exists());
        assert_eq!(
            std::fs::read_to_string(out.join(ROOT_CERT)).unwrap(),
            std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let dir = tmp("bad");
        let missing = issue(
            &dir.join("nope"),
            "foo",
            "sleep",
            DEFAULT_TTL,
            &dir.join("w"),
        )
        .unwrap_err()
        .to_string();
        assert!(missing.contains("meshguard ca init"), "{missing}");
        init(&dir.join("ca"), "cluster.local").unwrap();
        let ca = dir.join("ca");
        for (ns, sa, want) in [
            ("Foo", "sleep", "bad namespace"),
            ("foo/x", "sleep", "bad namespace"),
            ("", "sleep", "bad namespace"),
            ("foo", "sleep/../x", "bad service account"),
            ("foo", "-sleep", "bad service account"),
        ] {
            let err = issue(&ca, ns, sa, DEFAULT_TTL, &dir.join("w"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{ns}/{sa}: {err}");
        }
        let err = issue(&ca, "foo", "sleep", MAX_TTL * 2, &dir.join("w"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
        assert!(init(&dir.join("ca2"), "Cluster Local").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["", "h", "1", "0h", "-1h", "0s", "2d", "1w"] {
            let err = parse_ttl(bad).unwrap_err().to_string();
            assert!(err.contains("bad ttl"), "{bad}: {err}");
        }
    }
}
