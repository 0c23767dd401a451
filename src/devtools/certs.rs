//! A development mesh CA and workload certificates carrying SPIFFE URI SANs, as Istio's CA
//! issues them (`spiffe://<trust domain>/ns/<namespace>/sa/<service account>`).

use super::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A PEM certificate and its PEM private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`; returns (cert path, key path).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        write_private(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

fn write_private(path: &Path, pem: &str) -> Result<()> {
    std::fs::write(path, pem)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// How a workload certificate is issued beyond its [`Identity`]: its validity window and,
/// for negative tests, whether the SPIFFE URI SAN is left out.
#[derive(Debug, Clone, Default)]
pub struct IssueOptions {
    /// `(not_before, not_after)`; `None` keeps rcgen's (effectively unbounded) window.
    pub validity: Option<(SystemTime, SystemTime)>,
    /// Leave out the SPIFFE URI SAN (a certificate no mesh peer accepts as a workload).
    pub omit_spiffe: bool,
    /// Further URI SANs before and after the SPIFFE one (several identities in one
    /// certificate: RBAC tries each).
    pub uri_sans_before: Vec<String>,
    pub uri_sans_after: Vec<String>,
}

impl IssueOptions {
    /// Valid from one minute ago (clock skew) for `ttl`.
    pub fn ttl(ttl: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            validity: Some((now - Duration::from_secs(60), now + ttl)),
            ..Self::default()
        }
    }
}

/// A self-signed CA for one trust domain.
pub struct MeshCa {
    trust_domain: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// Who a workload certificate names, and where it may be reached (server certificates).
#[derive(Debug, Clone, Default)]
pub struct Identity<'a> {
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub dns_names: &'a [&'a str],
    pub ips: &'a [IpAddr],
}

impl MeshCa {
    /// A fresh ECDSA P-256 CA (`O=meshguard dev`, `CN=<trust domain> dev CA`).
    pub fn new(trust_domain: &str) -> Result<Self> {
        Self::with_key(trust_domain, KeyPair::generate()?)
    }

    /// The CA for `trust_domain` around an existing key. The certificate is rebuilt with the
    /// same subject and key identifier, so leaves it signs chain to the saved `ca.pem`.
    fn with_key(trust_domain: &str, key: KeyPair) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "meshguard dev");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{trust_domain} dev CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            cert,
            key,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Saves the CA into `dir`: `ca.pem`, `ca-key.pem` (mode 0600) and `trust-domain`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.write(dir)?;
        write_private(&dir.join("ca-key.pem"), &self.key.serialize_pem())?;
        std::fs::write(dir.join("trust-domain"), format!("{}\n", self.trust_domain))?;
        Ok(())
    }

    /// Loads a CA saved by [`MeshCa::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| {
                format!(
                    "{}: {e} (not a CA directory? create one with `meshguard ca init --out {}`)",
                    dir.join(name).display(),
                    dir.display()
                )
            })
        };
        let trust_domain = read("trust-domain")?.trim().to_string();
        let key = KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| {
            format!(
                "{}: not a private key: {e}",
                dir.join("ca-key.pem").display()
            )
        })?;
        Self::with_key(&trust_domain, key)
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The SPIFFE ID of `ns`/`sa` in this trust domain.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            self.trust_domain
        )
    }

    /// A workload certificate usable as client and server certificate.
    pub fn issue(&self, id: &Identity<'_>) -> Result<Issued> {
        self.issue_with(id, &IssueOptions::default())
    }

    /// [`MeshCa::issue`] with a validity window; every certificate gets a fresh key and a
    /// random serial number.
    pub fn issue_with(&self, id: &Identity<'_>, opts: &IssueOptions) -> Result<Issued> {
        let spiffe = self.spiffe_id(id.namespace, id.service_account);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "meshguard dev");
        if opts.omit_spiffe {
            // Something must name the subject: a CN as a pre-SPIFFE certificate would.
            params.distinguished_name.push(
                DnType::CommonName,
                format!("{}.{}", id.service_account, id.namespace),
            );
        } else {
            params.subject_alt_names = vec![SanType::URI(spiffe.as_str().try_into()?)];
        }
        for (i, uri) in opts.uri_sans_before.iter().enumerate() {
            params
                .subject_alt_names
                .insert(i, SanType::URI(uri.as_str().try_into()?));
        }
        for uri in &opts.uri_sans_after {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        if let Some((not_before, not_after)) = opts.validity {
            params.not_before = not_before.into();
            params.not_after = not_after.into();
        }
        params.serial_number = Some(random_serial());
        for dns in id.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*dns).try_into()?));
        }
        for ip in id.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.cert_pem())?;
        Ok(path)
    }
}

/// 16 random bytes, positive (top bit clear) as RFC 5280 requires.
fn random_serial() -> rcgen::SerialNumber {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// The file set the shipped sidecar config expects (`envoy/certs/` in the repository):
/// `ca.pem`, `server.pem`/`server-key.pem` for `foo/httpbin` (also valid for `localhost` and
/// 127.0.0.1), and a client `sleep.pem`/`sleep-key.pem` for `foo/sleep`.
pub fn write_demo_set(dir: &Path) -> Result<MeshCa> {
    let ca = MeshCa::new("cluster.local")?;
    ca.write(dir)?;
    let localhost: [IpAddr; 1] = [IpAddr::from([127, 0, 0, 1])];
    ca.issue(&Identity {
        namespace: "foo",
        service_account: "httpbin",
        dns_names: &["localhost"],
        ips: &localhost,
    })?
    .write(dir, "server")?;
    ca.issue(&Identity {
        namespace: "foo",
        service_account: "sleep",
        ..Default::default()
    })?
    .write(dir, "sleep")?;
    Ok(ca)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_the_spiffe_uri() {
        let ca = MeshCa::new("cluster.local").unwrap();
        let leaf = ca
            .issue(&Identity {
                namespace: "foo",
                service_account: "sleep",
                ..Default::default()
            })
            .unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert_eq!(
            ca.spiffe_id("foo", "sleep"),
            "spiffe://cluster.local/ns/foo/sa/sleep"
        );
        // The URI SAN is stored as an IA5String inside the DER.
        let der = pem_body(&leaf.cert_pem);
        let needle = b"spiffe://cluster.local/ns/foo/sa/sleep";
        assert!(der.windows(needle.len()).any(|w| w == needle));
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }
}
