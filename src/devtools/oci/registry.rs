//! A registry (distribution API v2) over plain HTTP as a [`Source`]: `GET
//! /v2/<repo>/manifests/<ref>` with the `Accept` list ggcr sends, `GET /v2/<repo>/blobs/<digest>`
//! (following a redirect on the same or another plain-HTTP host). No TLS and no token auth:
//! this is for a registry on loopback (tests, CI) or behind a plain-HTTP mirror; check an
//! HTTPS registry's image by copying it into a layout first (`skopeo copy docker://... oci:DIR`).

use super::check::{Fetched, Source};
use super::MANIFEST_ACCEPT;
use crate::Result;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response read (a manifest or a wasm layer; Envoy Gateway's cap is 256 MiB).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// A parsed image reference: `[oci://]HOST[:PORT]/REPO[:TAG|@sha256:HEX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host:port` (port 80 when absent).
    pub authority: String,
    pub repository: String,
    /// A tag or a `sha256:` digest; `latest` when absent (as Envoy Gateway and docker do).
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.strip_prefix("oci://").unwrap_or(s);
        let s = s.strip_prefix("docker://").unwrap_or(s);
        let (host, rest) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]"))?;
        if host.is_empty() || rest.is_empty() {
            return Err(format!("{s:?}: expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]").into());
        }
        // As docker reads references: the first component is a registry only with a port, a
        // dot or `localhost` (so a mistyped layout directory is not taken for a host).
        if !(host.contains(':') || host.contains('.') || host == "localhost") {
            return Err(format!(
                "{s:?}: neither an OCI image layout directory nor HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]"
            )
            .into());
        }
        let (repository, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            (repo, digest.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo, tag.to_string()),
                _ => (rest, "latest".to_string()),
            }
        };
        let authority = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Self {
            authority,
            repository: repository.to_string(),
            reference,
        })
    }
}

/// One registry repository.
pub struct Registry {
    authority: String,
    repository: String,
    timeout: Duration,
}

/// An HTTP response: status, headers (lowercase names), body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Registry {
    pub fn new(authority: &str, repository: &str) -> Self {
        Self {
            authority: authority.to_string(),
            repository: repository.to_string(),
            timeout: Duration::from_secs(30),
        }
    }

    /// `GET /v2/`: 200 when the registry answers without auth.
    pub fn ping(&self) -> Result<u16> {
        Ok(get(&self.authority, "/v2/", &[], self.timeout)?.status)
    }

    /// The manifest response itself (headers included: `Content-Type`, `Docker-Content-Digest`).
    pub fn manifest_response(&self, reference: &str) -> Result<HttpResponse> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let accept = MANIFEST_ACCEPT.join(", ");
        let resp = get(&self.authority, &path, &[("Accept", &accept)], self.timeout)?;
        if resp.status != 200 {
            return Err(format!(
                "GET {path}: HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body).trim()
            )
            .into());
        }
        Ok(resp)
    }
}

impl Source for Registry {
    fn manifest(&self, reference: &str) -> Result<Fetched> {
        let resp = self.manifest_response(reference)?;
        let media_type = resp
            .header("content-type")
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string());
        Ok(Fetched {
            bytes: resp.body,
            media_type,
        })
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut authority = self.authority.clone();
        let mut path = format!("/v2/{}/blobs/{digest}", self.repository);
        for _ in 0..5 {
            let resp = get(&authority, &path, &[], self.timeout)?;
            match resp.status {
                200 => return Ok(resp.body),
                301 | 302 | 303 | 307 | 308 => {
                    let location = resp
                        .header("location")
                        .ok_or("redirect without Location")?
                        .to_string();
                    if let Some(rest) = location.strip_prefix("http://") {
                        let (a, p) = rest.split_once('/').unwrap_or((rest, ""));
                        authority = if a.contains(':') {
                            a.to_string()
                        } else {
                            format!("{a}:80")
                        };
                        path = format!("/{p}");
                    } else if location.starts_with('/') {
                        path = location;
                    } else {
                        return Err(format!("redirect to {location:?}: plain HTTP only").into());
                    }
                }
                s => {
                    return Err(format!(
                        "GET {path}: HTTP {s}: {}",
                        String::from_utf8_lossy(&resp.body).trim()
                    )
                    .into())
                }
            }
        }
        Err(format!("blob {digest}: too many redirects").into())
    }

    fn describe(&self) -> String {
        format!("registry {}/{}", self.authority, self.repository)
    }
}

/// One `GET` over HTTP/1.1 with `Connection: close`; reads a `Content-Length`, chunked or
/// until-close body.
pub fn get(
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect {authority}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: meshguard-oci\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: bad status line {line:?}"))?;
    let mut resp_headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(format!("GET {path}: connection closed in headers").into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            resp_headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        resp_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| format!("GET {path}: bad chunk size {line:?}: {e}"))?;
            if size == 0 {
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(format!("GET {path}: body over {MAX_BODY} bytes").into());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            reader.read_line(&mut line)?;
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|e| format!("GET {path}: bad Content-Length {len:?}: {e}"))?;
        if len > MAX_BODY {
            return Err(format!("GET {path}: body of {len} bytes is over {MAX_BODY}").into());
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(format!("GET {path}: body over {MAX_BODY} bytes").into());
        }
    }
    Ok(HttpResponse {
        status,
        headers: resp_headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("oci://127.0.0.1:5000/meshguard:0.1.0").unwrap();
        assert_eq!(
            (
                r.authority.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "meshguard", "0.1.0")
        );
        let r = Reference::parse("localhost:5000/a/b@sha256:abc").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.reference.as_str()),
            ("a/b", "sha256:abc")
        );
        let r = Reference::parse("registry.test/org/meshguard").unwrap();
        assert_eq!(
            (r.authority.as_str(), r.reference.as_str()),
            ("registry.test:80", "latest")
        );
        assert!(Reference::parse("meshguard").is_err());
        assert!(Reference::parse("dist/oci").is_err());
        assert_eq!(
            Reference::parse("localhost/m").unwrap().authority,
            "localhost:80"
        );
    }
}
