//! The request as the engine sees it. The adapter fills these from Envoy's headers and
//! properties; tests build them directly.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Everything about one request that authentication and authorization may look at.
#[derive(Debug, Clone, Default)]
pub struct RequestAttributes {
    /// `:method`.
    pub method: String,
    /// `:path` as Envoy forwards it (after Envoy's normalisation), query string included.
    pub path: String,
    /// `:authority`.
    pub host: String,
    /// `:scheme` (`http` / `https`), used for the `www-authenticate` realm.
    pub scheme: String,
    /// Regular request headers, names lower-case, in arrival order. No pseudo headers.
    pub headers: Vec<(String, String)>,
    /// The TCP peer of the downstream connection (Envoy `connection.*` direct remote
    /// address); RBAC's `direct_remote_ip`, Istio's `ipBlocks` / `source.ip`.
    pub direct_remote: Option<SocketAddr>,
    /// The client address after X-Forwarded-For handling (Envoy `source.address`);
    /// RBAC's `remote_ip`, Istio's `remoteIpBlocks` / `remote.ip`.
    pub remote: Option<SocketAddr>,
    /// The local address the request arrived on (`destination.address`).
    pub destination: Option<SocketAddr>,
    pub connection: ConnectionInfo,
}

/// Facts about the downstream connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// `connection.mtls`: TLS with a validated client certificate.
    pub mtls: bool,
    /// Every URI SAN of the client certificate, in certificate order.
    pub peer_uri_sans: Vec<String>,
    /// Every DNS SAN of the client certificate, in certificate order.
    pub peer_dns_sans: Vec<String>,
    /// `connection.subject_peer_certificate` (RFC 2253), the last name RBAC tries.
    pub peer_subject: Option<String>,
    /// `connection.requested_server_name`.
    pub sni: Option<String>,
}

impl RequestAttributes {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in arrival order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without query string and fragment.
    pub fn path_only(&self) -> &str {
        // A byte scan: both delimiters are ASCII (a char-set `find` costs several times more
        // on every request).
        let end = self
            .path
            .bytes()
            .position(|b| b == b'?' || b == b'#')
            .unwrap_or(self.path.len());
        self.path.get(..end).unwrap_or(&self.path)
    }

    /// The query string (without `?`, without fragment), if any.
    pub fn query(&self) -> Option<&str> {
        let start = self.path.find('?')? + 1;
        let rest = &self.path[start..];
        Some(&rest[..rest.find('#').unwrap_or(rest.len())])
    }

    /// Istio's source principal: the first `spiffe://` URI SAN of an mTLS peer, without the
    /// scheme (`td/ns/N/sa/S`). No mTLS or no SPIFFE SAN -> none.
    pub fn peer_principal(&self) -> Option<&str> {
        if !self.connection.mtls {
            return None;
        }
        self.connection
            .peer_uri_sans
            .iter()
            .find_map(|san| san.strip_prefix("spiffe://"))
    }

    /// The namespace segment of the peer principal (`.../ns/<N>/...`).
    pub fn peer_namespace(&self) -> Option<&str> {
        let principal = self.peer_principal()?;
        let mut parts = principal.split('/');
        while let Some(p) = parts.next() {
            if p == "ns" {
                return parts.next();
            }
        }
        None
    }

    /// Direct TCP peer IP.
    pub fn direct_remote_ip(&self) -> Option<IpAddr> {
        self.direct_remote.map(|a| a.ip())
    }

    /// Client IP after X-Forwarded-For handling; falls back to the direct peer.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote.or(self.direct_remote).map(|a| a.ip())
    }
}

/// A JWT that passed verification, as authorization sees it (Envoy's `payload_in_metadata`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwt {
    pub issuer: String,
    /// `sub`, empty when the token has none.
    pub subject: String,
    /// The whole payload. Claims listed in `spaceDelimitedClaims` (and `scope`, `permission`)
    /// have already been split on spaces into JSON arrays.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl VerifiedJwt {
    /// Istio's request principal `iss/sub`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// The request facts a compiled configuration reads beyond headers. In Envoy each is a
/// property lookup (a few µs per request together), so the adapter fetches only these;
/// the rest stay at their defaults (absent), which nothing reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// `connection.mtls` and the client certificate's URI SANs.
    pub peer_identity: bool,
    /// `source.address` (`remote`, and `direct_remote` where no better source is there).
    pub source_address: bool,
    /// The TCP peer (`direct_remote`: ipBlocks, `source.ip`), from filter state.
    pub direct_remote: bool,
    /// `destination.address`.
    pub destination: bool,
    /// `connection.requested_server_name`.
    pub sni: bool,
}

impl Needs {
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            peer_identity: self.peer_identity || other.peer_identity,
            source_address: self.source_address || other.source_address,
            direct_remote: self.direct_remote || other.direct_remote,
            destination: self.destination || other.destination,
            sni: self.sni || other.sni,
        }
    }
}

/// What authentication established about the request's end user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthContext {
    /// The token whose payload authorization matches against (Envoy's jwt_authn metadata).
    /// None when the request carried no token.
    /// Shared with the verified-token cache: a cache hit copies no claims.
    pub jwt: Option<Arc<VerifiedJwt>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_principal_needs_mtls_and_spiffe() {
        let mut a = RequestAttributes::default();
        a.connection.peer_uri_sans = vec!["spiffe://cluster.local/ns/foo/sa/sleep".into()];
        assert_eq!(a.peer_principal(), None);
        a.connection.mtls = true;
        assert_eq!(a.peer_principal(), Some("cluster.local/ns/foo/sa/sleep"));
        assert_eq!(a.peer_namespace(), Some("foo"));
        a.connection.peer_uri_sans = vec!["https://example.com".into()];
        assert_eq!(a.peer_principal(), None);
    }

    #[test]
    fn path_and_query() {
        let a = RequestAttributes {
            path: "/a/b?x=1#frag".into(),
            ..Default::default()
        };
        assert_eq!(a.path_only(), "/a/b");
        assert_eq!(a.query(), Some("x=1"));
    }
}
