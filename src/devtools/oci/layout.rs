//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as a
//! [`Source`] for the checker: a tag is looked up in `index.json` by its
//! `org.opencontainers.image.ref.name` annotation, as `skopeo copy oci:DIR:TAG` does.

use super::check::{Fetched, Source};
use super::ANNOTATION_REF_NAME;
use crate::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens `dir`; it must hold an `oci-layout` file with `imageLayoutVersion`.
    pub fn open(dir: &Path) -> Result<Self> {
        let marker = dir.join("oci-layout");
        let text = std::fs::read_to_string(&marker)
            .map_err(|e| format!("{}: not an OCI image layout: {e}", marker.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", marker.display()))?;
        if v.get("imageLayoutVersion")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(format!("{}: no imageLayoutVersion", marker.display()).into());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn index(&self) -> Result<Value> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }

    /// The tags in `index.json`, in order.
    pub fn tags(&self) -> Result<Vec<String>> {
        let index = self.index()?;
        Ok(manifests(&index)
            .iter()
            .filter_map(|d| d.pointer(&pointer_ref_name()).and_then(Value::as_str))
            .map(String::from)
            .collect())
    }
}

fn pointer_ref_name() -> String {
    // JSON pointer escaping: '/' is '~1'; the annotation name has none, '.' needs nothing.
    format!(
        "/annotations/{}",
        ANNOTATION_REF_NAME.replace('~', "~0").replace('/', "~1")
    )
}

fn manifests(index: &Value) -> Vec<Value> {
    index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `sha256:<64 hex>` -> `("sha256", hex)`; anything else is refused (no path tricks).
fn split_digest(digest: &str) -> Result<(&str, &str)> {
    match digest.split_once(':') {
        Some((alg @ "sha256", hex)) if super::is_sha256_hex(hex) => Ok((alg, hex)),
        _ => Err(format!("{digest:?} is not a sha256 digest").into()),
    }
}

impl Source for Layout {
    fn manifest(&self, reference: &str) -> Result<Fetched> {
        if reference.starts_with("sha256:") {
            let bytes = self.blob(reference)?;
            return Ok(Fetched {
                bytes,
                media_type: None,
            });
        }
        let index = self.index()?;
        let all = manifests(&index);
        let pointer = pointer_ref_name();
        let chosen = if reference.is_empty() {
            match all.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(format!(
                        "{}: index.json has {} manifests; name a tag (DIR:TAG)",
                        self.dir.display(),
                        all.len()
                    )
                    .into())
                }
            }
        } else {
            all.iter()
                .find(|d| d.pointer(&pointer).and_then(Value::as_str) == Some(reference))
                .cloned()
                .ok_or_else(|| {
                    format!("{}: no manifest tagged {reference:?}", self.dir.display())
                })?
        };
        let digest = chosen
            .get("digest")
            .and_then(Value::as_str)
            .ok_or("index.json: a descriptor without digest")?;
        Ok(Fetched {
            bytes: self.blob(digest)?,
            media_type: chosen
                .get("mediaType")
                .and_then(Value::as_str)
                .map(String::from),
        })
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let (alg, hex) = split_digest(digest)?;
        let path = self.dir.join("blobs").join(alg).join(hex);
        Ok(std::fs::read(&path).map_err(|e| format!("blob {digest}: {}: {e}", path.display()))?)
    }

    fn describe(&self) -> String {
        format!("layout {}", self.dir.display())
    }
}
