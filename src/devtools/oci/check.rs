//! What Istio's `pkg/wasm` and Envoy Gateway's `internal/wasm` check when they pull a wasm
//! image, in their order (see the module docs of `oci` for the upstream rules): resolve an
//! index to linux/amd64, take the manifest digest (compared with the resource's `sha256`
//! before anything else is fetched), pick the extraction by manifest type, verify every blob
//! against its digest, find `plugin.wasm`, check the wasm magic.

use super::{
    digest_of, is_sha256_hex, sha256_hex, ANNOTATION_VARIANT, MAX_WASM_SIZE,
    MEDIA_DOCKER_LAYER_GZIP, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_WASM_CONTENT_LAYER, PLUGIN_FILE,
};
use crate::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

/// A manifest as a source returns it.
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The media type the source states (a registry's `Content-Type`, a layout descriptor's
    /// `mediaType`), if any.
    pub media_type: Option<String>,
}

/// Where images come from: an image layout, a registry.
pub trait Source {
    /// The manifest (or index) `reference` names: a tag, or a `sha256:` digest.
    fn manifest(&self, reference: &str) -> Result<Fetched>;
    /// The blob with this `sha256:` digest (not yet verified).
    fn blob(&self, digest: &str) -> Result<Vec<u8>>;
    /// For messages: what this source is.
    fn describe(&self) -> String;
}

/// How the module was found, i.e. which extraction of the consumers succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Docker schema 2 manifest, last layer `...rootfs.diff.tar.gzip` holding `plugin.wasm`.
    DockerCompat,
    /// OCI manifest, last layer `...layer.v1.tar+gzip` holding `plugin.wasm` (what `build` makes).
    OciCompat,
    /// solo's two-layer *oci* variant with a raw `...content.layer.v1+wasm` layer.
    OciVariant,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::DockerCompat => "compat (Docker manifest, rootfs.diff.tar.gzip layer)",
            Format::OciCompat => "compat (OCI manifest, layer.v1.tar+gzip layer)",
            Format::OciVariant => "oci variant (raw content.layer.v1+wasm layer)",
        })
    }
}

/// Why a consumer would refuse the image (or the `sha256` given with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The source could not deliver a manifest or blob.
    Fetch(String),
    /// Content does not hash to the digest that names it.
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A manifest or index that is not the JSON it must be.
    BadManifest(String),
    /// An index with no child for linux/amd64 (ggcr: "no child with platform amd64/linux").
    NoPlatform {
        index: String,
        platforms: Vec<String>,
    },
    /// Indexes nested deeper than anyone builds them.
    IndexTooDeep,
    /// A manifest without layers.
    NoLayers,
    /// The last layer is not the media type its manifest kind requires.
    LastLayer {
        expected: String,
        found: String,
    },
    /// The oci variant needs exactly two layers.
    LayerCount(usize),
    /// The oci variant's two layers have no `...content.layer.v1+wasm`.
    NoWasmLayer,
    /// Neither the compat nor the oci variant fits (an OCI manifest).
    NotAWasmImage {
        compat: Box<Rejection>,
        oci: Box<Rejection>,
    },
    /// The layer is not gzip (e.g. a plain tar labelled tar+gzip).
    NotGzip(String),
    BadTar(String),
    /// No tar entry whose base name is `plugin.wasm`.
    NoPluginWasm {
        entries: Vec<String>,
    },
    TooLarge(u64),
    /// The payload is not a wasm binary (under 8 bytes, or no `\0asm`).
    NotWasm {
        len: usize,
        head: Vec<u8>,
    },
    /// The `sha256` given is not 64 lowercase hex digits.
    BadChecksum(String),
    /// The `sha256` given is not the manifest digest.
    ChecksumMismatch {
        expected: String,
        manifest: String,
        hint: String,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Fetch(e) => write!(f, "cannot fetch: {e}"),
            Rejection::DigestMismatch { what, expected, actual } => {
                write!(f, "{what}: content has digest {actual}, its descriptor says {expected}")
            }
            Rejection::SizeMismatch { what, expected, actual } => {
                write!(f, "{what}: {actual} bytes, its descriptor says {expected}")
            }
            Rejection::BadManifest(e) => write!(f, "invalid manifest: {e}"),
            Rejection::NoPlatform { index, platforms } => write!(
                f,
                "index {index} has no linux/amd64 manifest (has: {}); Istio and Envoy Gateway resolve indexes to linux/amd64",
                if platforms.is_empty() { "none".to_string() } else { platforms.join(", ") }
            ),
            Rejection::IndexTooDeep => write!(f, "indexes nested more than 4 deep"),
            Rejection::NoLayers => write!(f, "number of layers must be greater than zero"),
            Rejection::LastLayer { expected, found } => {
                write!(f, "last layer has media type {found} (expected {expected})")
            }
            Rejection::LayerCount(n) => write!(f, "number of layers must be 2 but got {n}"),
            Rejection::NoWasmLayer => {
                write!(f, "no layer of type {MEDIA_WASM_CONTENT_LAYER}")
            }
            Rejection::NotAWasmImage { compat, oci } => write!(
                f,
                "not a wasm image: as the compat variant: {compat}; as the oci variant: {oci}"
            ),
            Rejection::NotGzip(e) => write!(f, "failed to parse layer as tar.gz: {e}"),
            Rejection::BadTar(e) => write!(f, "layer is not a readable tar: {e}"),
            Rejection::NoPluginWasm { entries } => write!(
                f,
                "{PLUGIN_FILE} not found in the archive (entries: {})",
                if entries.is_empty() { "none".to_string() } else { entries.join(", ") }
            ),
            Rejection::TooLarge(n) => {
                write!(f, "{PLUGIN_FILE} size {n} exceeds maximum size {MAX_WASM_SIZE}")
            }
            Rejection::NotWasm { len, head } => write!(
                f,
                "the payload is not a wasm binary ({len} bytes, starts with {head:02x?}; wants at least 8 bytes starting with 00 61 73 6d)"
            ),
            Rejection::BadChecksum(s) => write!(
                f,
                "sha256 {s:?} is not 64 lowercase hex digits (no sha256: prefix)"
            ),
            Rejection::ChecksumMismatch { expected, manifest, hint } => write!(
                f,
                "sha256 {expected} does not match the manifest digest {manifest}{hint}"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

/// A passing image: what the consumers would load and compare.
#[derive(Clone, Debug)]
pub struct Checked {
    pub format: Format,
    /// `sha256:<hex>` of the image manifest (after index resolution).
    pub manifest_digest: String,
    /// The index the reference named, when it named one.
    pub index_digest: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// The module (`plugin.wasm`).
    pub wasm: Vec<u8>,
    pub wasm_sha256: String,
    /// Bytes of manifest + config + layers.
    pub image_size: u64,
    /// Things that do not stop Istio or Envoy Gateway but would stop `docker pull` or are
    /// worth knowing.
    pub warnings: Vec<String>,
}

impl Checked {
    /// The value for `WasmPlugin.spec.sha256` / `EnvoyExtensionPolicy` `code.image.sha256`.
    pub fn sha256_field(&self) -> &str {
        self.manifest_digest.trim_start_matches("sha256:")
    }
}

/// Checks the image `reference` (tag or digest; empty = a layout's only manifest) names in
/// `source`, and the `sha256` a `WasmPlugin`/`EnvoyExtensionPolicy` would carry, if given.
pub fn check(
    source: &dyn Source,
    reference: &str,
    sha256: Option<&str>,
) -> std::result::Result<Checked, Rejection> {
    if let Some(s) = sha256 {
        if !is_sha256_hex(s) {
            return Err(Rejection::BadChecksum(s.to_string()));
        }
    }
    let mut fetched = fetch_manifest(source, reference)?;
    let mut index_digest = None;
    let mut depth = 0;
    // Resolve indexes: first child that is linux/amd64 (absent platform = linux/amd64).
    loop {
        let json = parse(&fetched.bytes, "manifest")?;
        if !is_index(fetched.media_type.as_deref(), &json) {
            break;
        }
        depth += 1;
        if depth > 4 {
            return Err(Rejection::IndexTooDeep);
        }
        let this = digest_of(&fetched.bytes);
        index_digest.get_or_insert_with(|| this.clone());
        let child = pick_amd64(&json, &this)?;
        let digest = str_field(&child, "digest")?;
        let mut next = fetch_manifest(source, &digest)?;
        verify(&next.bytes, &child, &format!("manifest {digest}"))?;
        if next.media_type.is_none() {
            next.media_type = child
                .get("mediaType")
                .and_then(Value::as_str)
                .map(String::from);
        }
        fetched = next;
    }
    let manifest_digest = digest_of(&fetched.bytes);
    if let Some(expected) = sha256 {
        let actual = manifest_digest.trim_start_matches("sha256:");
        if expected != actual {
            let hint = if index_digest
                .as_deref()
                .map(|d| d.trim_start_matches("sha256:"))
                == Some(expected)
            {
                " (that is the index digest; the consumers compare the linux/amd64 manifest's)"
            } else {
                ""
            };
            return Err(Rejection::ChecksumMismatch {
                expected: expected.to_string(),
                manifest: actual.to_string(),
                hint: hint.to_string(),
            });
        }
    }
    let manifest = parse(&fetched.bytes, "manifest")?;
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut warnings = Vec::new();
    let mut image_size = fetched.bytes.len() as u64;
    let docker = manifest.get("mediaType").and_then(Value::as_str) == Some(MEDIA_DOCKER_MANIFEST);
    let (format, wasm, diff_id) = if docker {
        let (wasm, diff_id, size) = compat(source, &layers, MEDIA_DOCKER_LAYER_GZIP)?;
        image_size += size;
        (Format::DockerCompat, wasm, Some(diff_id))
    } else {
        match compat(source, &layers, MEDIA_OCI_LAYER_GZIP) {
            Ok((wasm, diff_id, size)) => {
                image_size += size;
                (Format::OciCompat, wasm, Some(diff_id))
            }
            Err(compat_err) => match oci_variant(source, &layers) {
                Ok((wasm, size)) => {
                    image_size += size;
                    (Format::OciVariant, wasm, None)
                }
                Err(oci_err) => {
                    return Err(Rejection::NotAWasmImage {
                        compat: Box::new(compat_err),
                        oci: Box::new(oci_err),
                    })
                }
            },
        }
    };
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(Rejection::NotWasm {
            len: wasm.len(),
            head: wasm.iter().take(8).copied().collect(),
        });
    }
    let annotations: BTreeMap<String, String> = manifest
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    if format != Format::OciVariant
        && annotations.get(ANNOTATION_VARIANT).map(String::as_str) != Some("compat")
    {
        warnings.push(format!(
            "no annotation {ANNOTATION_VARIANT}: compat (optional for Istio and Envoy Gateway)"
        ));
    }
    image_size += config_warnings(source, &manifest, diff_id.as_deref(), &mut warnings);
    Ok(Checked {
        format,
        manifest_digest,
        index_digest,
        annotations,
        wasm_sha256: sha256_hex(&wasm),
        wasm,
        image_size,
        warnings,
    })
}

fn fetch_manifest(source: &dyn Source, reference: &str) -> std::result::Result<Fetched, Rejection> {
    let fetched = source.manifest(reference).map_err(|e| {
        Rejection::Fetch(format!(
            "{}: manifest {reference:?}: {e}",
            source.describe()
        ))
    })?;
    // A manifest named by digest must have that digest (ggcr checks it too).
    if reference.starts_with("sha256:") {
        let actual = digest_of(&fetched.bytes);
        if actual != reference {
            return Err(Rejection::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: reference.to_string(),
                actual,
            });
        }
    }
    Ok(fetched)
}

fn parse(bytes: &[u8], what: &str) -> std::result::Result<Value, Rejection> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::BadManifest(format!("{what}: not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Rejection::BadManifest(format!("{what}: not a JSON object")));
    }
    Ok(v)
}

fn is_index(media_type: Option<&str>, json: &Value) -> bool {
    let declared = media_type.or_else(|| json.get("mediaType").and_then(Value::as_str));
    match declared {
        Some(t) => t == MEDIA_OCI_INDEX || t == MEDIA_DOCKER_LIST,
        None => json.get("manifests").is_some() && json.get("layers").is_none(),
    }
}

fn pick_amd64(index: &Value, digest: &str) -> std::result::Result<Value, Rejection> {
    let children = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| Rejection::BadManifest(format!("index {digest}: no manifests")))?;
    let mut seen = Vec::new();
    for child in children {
        let (os, arch) = match child.get("platform") {
            None | Some(Value::Null) => ("linux", "amd64"),
            Some(p) => (
                p.get("os").and_then(Value::as_str).unwrap_or(""),
                p.get("architecture").and_then(Value::as_str).unwrap_or(""),
            ),
        };
        if (os, arch) == ("linux", "amd64") {
            return Ok(child.clone());
        }
        seen.push(format!("{os}/{arch}"));
    }
    Err(Rejection::NoPlatform {
        index: digest.to_string(),
        platforms: seen,
    })
}

fn str_field(v: &Value, key: &str) -> std::result::Result<String, Rejection> {
    v.get(key)
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| Rejection::BadManifest(format!("descriptor without {key}: {v}")))
}

/// Checks content against its descriptor: digest (sha256 only) and size.
fn verify(bytes: &[u8], desc: &Value, what: &str) -> std::result::Result<(), Rejection> {
    let expected = str_field(desc, "digest")?;
    let actual = digest_of(bytes);
    if expected != actual {
        return Err(Rejection::DigestMismatch {
            what: what.to_string(),
            expected,
            actual,
        });
    }
    if let Some(size) = desc.get("size").and_then(Value::as_u64) {
        if size != bytes.len() as u64 {
            return Err(Rejection::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: bytes.len() as u64,
            });
        }
    }
    Ok(())
}

fn fetch_blob(
    source: &dyn Source,
    desc: &Value,
    what: &str,
) -> std::result::Result<Vec<u8>, Rejection> {
    let digest = str_field(desc, "digest")?;
    let bytes = source
        .blob(&digest)
        .map_err(|e| Rejection::Fetch(format!("{}: {what} {digest}: {e}", source.describe())))?;
    verify(&bytes, desc, &format!("{what} {digest}"))?;
    Ok(bytes)
}

/// The compat extraction: last layer of `media_type`, gunzip, first entry named
/// `.../plugin.wasm`. Returns the module, the layer's diff_id and its compressed size.
fn compat(
    source: &dyn Source,
    layers: &[Value],
    media_type: &str,
) -> std::result::Result<(Vec<u8>, String, u64), Rejection> {
    let last = layers.last().ok_or(Rejection::NoLayers)?;
    let found = last.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if found != media_type {
        return Err(Rejection::LastLayer {
            expected: media_type.to_string(),
            found: found.to_string(),
        });
    }
    let blob = fetch_blob(source, last, "layer")?;
    let (wasm, diff_id) = plugin_from_tar_gz(&blob)?;
    Ok((wasm, diff_id, blob.len() as u64))
}

/// `plugin.wasm` out of a gzip'd tar, and the sha256 digest of the uncompressed tar stream.
pub fn plugin_from_tar_gz(blob: &[u8]) -> std::result::Result<(Vec<u8>, String), Rejection> {
    if blob.len() < 2 || blob[..2] != [0x1f, 0x8b] {
        return Err(Rejection::NotGzip("gzip: invalid header".into()));
    }
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .take(MAX_WASM_SIZE)
        .read_to_end(&mut tar_bytes)
        .map_err(|e| Rejection::NotGzip(e.to_string()))?;
    let diff_id = digest_of(&tar_bytes);
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let entries = archive
        .entries()
        .map_err(|e| Rejection::BadTar(e.to_string()))?;
    let mut names = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| Rejection::BadTar(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| Rejection::BadTar(e.to_string()))?
            .into_owned();
        if path.file_name().and_then(|n| n.to_str()) == Some(PLUGIN_FILE) {
            let size = entry.header().size().unwrap_or(0);
            if size > MAX_WASM_SIZE {
                return Err(Rejection::TooLarge(size));
            }
            let mut wasm = Vec::new();
            entry
                .read_to_end(&mut wasm)
                .map_err(|e| Rejection::BadTar(format!("failed to read {PLUGIN_FILE}: {e}")))?;
            return Ok((wasm, diff_id));
        }
        names.push(path.display().to_string());
    }
    Err(Rejection::NoPluginWasm { entries: names })
}

/// solo's *oci* variant: exactly two layers, the module raw in the `content.layer.v1+wasm` one.
fn oci_variant(
    source: &dyn Source,
    layers: &[Value],
) -> std::result::Result<(Vec<u8>, u64), Rejection> {
    if layers.len() != 2 {
        return Err(Rejection::LayerCount(layers.len()));
    }
    let layer = layers
        .iter()
        .find(|l| l.get("mediaType").and_then(Value::as_str) == Some(MEDIA_WASM_CONTENT_LAYER))
        .ok_or(Rejection::NoWasmLayer)?;
    let wasm = fetch_blob(source, layer, "layer")?;
    let other = layers
        .iter()
        .find(|l| !std::ptr::eq(*l, layer))
        .and_then(|l| l.get("size").and_then(Value::as_u64))
        .unwrap_or(0);
    let size = wasm.len() as u64 + other;
    Ok((wasm, size))
}

/// The config is not read by Istio or Envoy Gateway, but `docker pull` verifies it and its
/// `rootfs.diff_ids`. Returns the config's size.
fn config_warnings(
    source: &dyn Source,
    manifest: &Value,
    diff_id: Option<&str>,
    warnings: &mut Vec<String>,
) -> u64 {
    let Some(desc) = manifest.get("config") else {
        warnings.push("manifest has no config (docker pull would refuse it)".into());
        return 0;
    };
    let config = match fetch_blob(source, desc, "config") {
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!("config: {e} (docker pull would refuse it)"));
            return 0;
        }
    };
    let size = config.len() as u64;
    let Ok(json) = serde_json::from_slice::<Value>(&config) else {
        warnings.push("config is not JSON (docker pull would refuse it)".into());
        return size;
    };
    if let (Some(want), Some(ids)) = (
        diff_id,
        json.pointer("/rootfs/diff_ids").and_then(Value::as_array),
    ) {
        if ids.last().and_then(Value::as_str) != Some(want) {
            warnings.push(format!(
                "config rootfs.diff_ids does not end with the layer's diff_id {want} (docker pull would refuse it)"
            ));
        }
    }
    if json.get("created").is_some() {
        warnings.push("config has `created`: rebuilding gives another digest".into());
    }
    size
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::build::{build, gzip, layer_tar, BuildOptions};
    use super::super::{MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER_TAR, MEDIA_OCI_MANIFEST};
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    /// An in-memory registry: manifests by tag and digest, blobs by digest.
    #[derive(Default)]
    struct Mem {
        tags: BTreeMap<String, (Vec<u8>, String)>,
        blobs: RefCell<BTreeMap<String, Vec<u8>>>,
    }

    impl Mem {
        fn blob(&self, bytes: &[u8]) -> String {
            let d = digest_of(bytes);
            self.blobs.borrow_mut().insert(d.clone(), bytes.to_vec());
            d
        }
        fn put(&mut self, tag: &str, media_type: &str, v: &Value) -> String {
            let bytes = serde_json::to_vec(v).unwrap();
            let d = self.blob(&bytes);
            self.tags.insert(tag.into(), (bytes, media_type.into()));
            d
        }
        fn desc(&self, media_type: &str, bytes: &[u8]) -> Value {
            json!({ "mediaType": media_type, "digest": self.blob(bytes), "size": bytes.len() })
        }
    }

    impl Source for Mem {
        fn manifest(&self, reference: &str) -> Result<Fetched> {
            if let Some((b, t)) = self.tags.get(reference) {
                return Ok(Fetched {
                    bytes: b.clone(),
                    media_type: Some(t.clone()),
                });
            }
            let b = self
                .blobs
                .borrow()
                .get(reference)
                .cloned()
                .ok_or("MANIFEST_UNKNOWN")?;
            Ok(Fetched {
                bytes: b,
                media_type: None,
            })
        }
        fn blob(&self, digest: &str) -> Result<Vec<u8>> {
            Ok(self
                .blobs
                .borrow()
                .get(digest)
                .cloned()
                .ok_or("BLOB_UNKNOWN")?)
        }
        fn describe(&self) -> String {
            "mem".into()
        }
    }

    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[7u8; 300]);
        m
    }

    fn opts() -> BuildOptions {
        BuildOptions {
            source: "https://example.test/m".into(),
            revision: "r".into(),
            version: "0.1.0".into(),
            tag: "t".into(),
        }
    }

    /// A registry holding what `build` makes, tagged `t`.
    fn built() -> (Mem, String) {
        let img = build(&module(), &opts()).unwrap();
        let mut mem = Mem::default();
        mem.blob(&img.layer);
        mem.blob(&img.config);
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        let d = mem.put("t", MEDIA_OCI_MANIFEST, &m);
        assert_eq!(d, img.manifest_digest);
        (mem, d)
    }

    fn config(mem: &Mem) -> Value {
        mem.desc(
            MEDIA_OCI_CONFIG,
            br#"{"architecture":"amd64","os":"linux"}"#,
        )
    }

    /// A manifest of `kind` with these layers (descriptors).
    fn manifest(mem: &mut Mem, kind: &str, layers: Vec<Value>) -> String {
        let cfg = config(mem);
        mem.put(
            "x",
            kind,
            &json!({ "schemaVersion": 2, "mediaType": kind, "config": cfg, "layers": layers }),
        )
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_built_image_passes_with_its_manifest_digest() {
        let (mem, digest) = built();
        let hex = digest.trim_start_matches("sha256:").to_string();
        let c = check(&mem, "t", Some(&hex)).unwrap();
        assert_eq!(c.format, Format::OciCompat);
        assert_eq!(c.wasm, module());
        assert_eq!(c.sha256_field(), hex);
        assert!(c.index_digest.is_none());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // By digest too.
        assert_eq!(check(&mem, &digest, None).unwrap().wasm, module());
    }

    #[test]
    fn wrong_sha256_is_refused_before_extraction() {
        let (mem, _) = built();
        let c = check(&mem, "t", None).unwrap();
        // The wasm file's sha256 is not the manifest digest.
        let e = check(&mem, "t", Some(&c.wasm_sha256)).unwrap_err();
        assert!(matches!(e, Rejection::ChecksumMismatch { .. }), "{e}");
        let e = check(&mem, "t", Some(&format!("sha256:{}", c.sha256_field()))).unwrap_err();
        assert!(matches!(e, Rejection::BadChecksum(_)), "{e}");
        let upper = c.sha256_field().to_uppercase();
        assert!(matches!(
            check(&mem, "t", Some(&upper)).unwrap_err(),
            Rejection::BadChecksum(_)
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let (mem, _) = built();
        let img = build(&module(), &opts()).unwrap();
        let mut tampered = img.layer.clone();
        let n = tampered.len();
        tampered[n - 9] ^= 1; // inside the deflate stream's trailer area: still "gzip"
        mem.blobs
            .borrow_mut()
            .insert(img.layer_digest.clone(), tampered);
        let e = check(&mem, "t", None).unwrap_err();
        match e {
            Rejection::NotAWasmImage { compat, .. } => {
                assert!(
                    matches!(*compat, Rejection::DigestMismatch { .. }),
                    "{compat}"
                )
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_manifest_fetched_by_digest_must_have_it() {
        let (mem, digest) = built();
        let other = digest_of(b"{}");
        let bytes = mem.blob_bytes(&digest);
        mem.blobs.borrow_mut().insert(other.clone(), bytes);
        let e = check(&mem, &other, None).unwrap_err();
        assert!(matches!(e, Rejection::DigestMismatch { .. }), "{e}");
    }

    impl Mem {
        fn blob_bytes(&self, d: &str) -> Vec<u8> {
            self.blobs.borrow().get(d).cloned().unwrap()
        }
    }

    #[test]
    fn uncompressed_layer_is_refused() {
        let mut mem = Mem::default();
        let tar = layer_tar(&module()).unwrap();
        let l = mem.desc(MEDIA_OCI_LAYER_TAR, &tar);
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
        let e = check(&mem, "x", None).unwrap_err();
        let Rejection::NotAWasmImage { compat, oci } = e else {
            panic!("{e}")
        };
        assert_eq!(
            *compat,
            Rejection::LastLayer {
                expected: MEDIA_OCI_LAYER_GZIP.into(),
                found: MEDIA_OCI_LAYER_TAR.into()
            }
        );
        assert_eq!(*oci, Rejection::LayerCount(1));
        // A plain tar labelled tar+gzip.
        let mut mem = Mem::default();
        let l = mem.desc(MEDIA_OCI_LAYER_GZIP, &tar);
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
        let Rejection::NotAWasmImage { compat, .. } = check(&mem, "x", None).unwrap_err() else {
            panic!()
        };
        assert!(matches!(*compat, Rejection::NotGzip(_)), "{compat}");
    }

    #[test]
    fn no_plugin_wasm_is_refused_and_a_nested_one_is_found() {
        let mut mem = Mem::default();
        let gz = gzip(&tar_of(&[("module.wasm", &module())])).unwrap();
        let l = mem.desc(MEDIA_OCI_LAYER_GZIP, &gz);
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
        let Rejection::NotAWasmImage { compat, .. } = check(&mem, "x", None).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            *compat,
            Rejection::NoPluginWasm {
                entries: vec!["module.wasm".into()]
            }
        );

        // Base name match: the first entry named */plugin.wasm wins, as filepath.Base does.
        let mut mem = Mem::default();
        let gz = gzip(&tar_of(&[
            ("README", b"x"),
            ("usr/lib/plugin.wasm", &module()),
            ("plugin.wasm", b"second"),
        ]))
        .unwrap();
        let l = mem.desc(MEDIA_OCI_LAYER_GZIP, &gz);
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
        let c = check(&mem, "x", None).unwrap();
        assert_eq!(c.wasm, module());
        assert!(
            c.warnings.iter().any(|w| w.contains(ANNOTATION_VARIANT)),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn only_the_last_layer_counts() {
        let mut mem = Mem::default();
        let good = mem.desc(
            MEDIA_OCI_LAYER_GZIP,
            &gzip(&layer_tar(&module()).unwrap()).unwrap(),
        );
        let junk = mem.desc(
            MEDIA_OCI_LAYER_GZIP,
            &gzip(&tar_of(&[("etc/passwd", b"x")])).unwrap(),
        );
        manifest(
            &mut mem,
            MEDIA_OCI_MANIFEST,
            vec![good.clone(), junk.clone()],
        );
        assert!(check(&mem, "x", None).is_err());
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![junk, good]);
        assert_eq!(check(&mem, "x", None).unwrap().wasm, module());
    }

    #[test]
    fn payload_must_be_wasm() {
        for payload in [&b"\0asm\x01\0\0"[..], b"MZ\x90\0\x03\0\0\0\x04\0", b""] {
            let mut mem = Mem::default();
            let l = mem.desc(
                MEDIA_OCI_LAYER_GZIP,
                &gzip(&layer_tar(payload).unwrap()).unwrap(),
            );
            manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
            let e = check(&mem, "x", None).unwrap_err();
            assert!(matches!(e, Rejection::NotWasm { .. }), "{e}");
        }
    }

    #[test]
    fn a_plugin_over_256_mib_is_refused() {
        // Only the header: the size it claims is checked before any byte is read.
        let mut h = tar::Header::new_ustar();
        h.set_path(PLUGIN_FILE).unwrap();
        h.set_size(MAX_WASM_SIZE + 1);
        h.set_mode(0o644);
        h.set_cksum();
        let gz = gzip(h.as_bytes()).unwrap();
        assert_eq!(
            plugin_from_tar_gz(&gz).unwrap_err(),
            Rejection::TooLarge(MAX_WASM_SIZE + 1)
        );
    }

    #[test]
    fn docker_manifest_needs_the_docker_layer_type() {
        let gz = gzip(&layer_tar(&module()).unwrap()).unwrap();
        let mut mem = Mem::default();
        let l = mem.desc(MEDIA_DOCKER_LAYER_GZIP, &gz);
        manifest(&mut mem, MEDIA_DOCKER_MANIFEST, vec![l]);
        assert_eq!(check(&mem, "x", None).unwrap().format, Format::DockerCompat);
        // A Docker manifest with the OCI layer type: the Docker extraction alone is tried.
        let mut mem = Mem::default();
        let l = mem.desc(MEDIA_OCI_LAYER_GZIP, &gz);
        manifest(&mut mem, MEDIA_DOCKER_MANIFEST, vec![l]);
        let e = check(&mem, "x", None).unwrap_err();
        assert_eq!(
            e,
            Rejection::LastLayer {
                expected: MEDIA_DOCKER_LAYER_GZIP.into(),
                found: MEDIA_OCI_LAYER_GZIP.into()
            }
        );
        // And an OCI manifest with the Docker layer type is neither variant.
        let mut mem = Mem::default();
        let l = mem.desc(MEDIA_DOCKER_LAYER_GZIP, &gz);
        manifest(&mut mem, MEDIA_OCI_MANIFEST, vec![l]);
        assert!(matches!(
            check(&mem, "x", None).unwrap_err(),
            Rejection::NotAWasmImage { .. }
        ));
        // No layers at all.
        let mut mem = Mem::default();
        manifest(&mut mem, MEDIA_DOCKER_MANIFEST, vec![]);
        assert_eq!(check(&mem, "x", None).unwrap_err(), Rejection::NoLayers);
    }

    #[test]
    fn oci_variant_and_the_cncf_artifact() {
        let mut mem = Mem::default();
        let cfg = mem.desc("application/vnd.module.wasm.config.v1+json", b"{}");
        let raw = mem.desc(MEDIA_WASM_CONTENT_LAYER, &module());
        mem.put(
            "x",
            MEDIA_OCI_MANIFEST,
            &json!({ "schemaVersion": 2, "config": cfg, "layers": [cfg, raw] }),
        );
        assert_eq!(check(&mem, "x", None).unwrap().format, Format::OciVariant);
        // The CNCF wasm artifact: neither consumer reads it.
        let mut mem = Mem::default();
        let cfg = mem.desc("application/vnd.wasm.config.v0+json", b"{}");
        let raw = mem.desc("application/wasm", &module());
        mem.put(
            "x",
            MEDIA_OCI_MANIFEST,
            &json!({ "schemaVersion": 2, "config": cfg, "layers": [raw] }),
        );
        let e = check(&mem, "x", None).unwrap_err();
        assert!(matches!(e, Rejection::NotAWasmImage { .. }), "{e}");
    }

    fn index(mem: &mut Mem, tag: &str, children: Vec<Value>) -> String {
        mem.put(
            tag,
            MEDIA_OCI_INDEX,
            &json!({ "schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": children }),
        )
    }

    fn child(mem: &Mem, digest: &str, platform: Option<(&str, &str)>) -> Value {
        let bytes = mem.blob_bytes(digest);
        let mut d =
            json!({ "mediaType": MEDIA_OCI_MANIFEST, "digest": digest, "size": bytes.len() });
        if let Some((os, arch)) = platform {
            d["platform"] = json!({ "os": os, "architecture": arch });
        }
        d
    }

    #[test]
    fn an_index_resolves_to_linux_amd64() {
        let (mut mem, digest) = built();
        let arm = child(&mem, &digest, Some(("linux", "arm64")));
        let amd = child(&mem, &digest, Some(("linux", "amd64")));
        let idx = index(&mut mem, "i", vec![arm.clone(), amd]);
        let c = check(&mem, "i", None).unwrap();
        assert_eq!(c.manifest_digest, digest);
        assert_eq!(c.index_digest.as_deref(), Some(idx.as_str()));
        // The index digest is not what the sha256 field holds.
        let e = check(&mem, "i", Some(idx.trim_start_matches("sha256:"))).unwrap_err();
        assert!(e.to_string().contains("index digest"), "{e}");
        assert!(check(&mem, "i", Some(digest.trim_start_matches("sha256:"))).is_ok());

        // Without amd64: refused.
        let wasi = child(&mem, &digest, Some(("wasip1", "wasm")));
        index(&mut mem, "noamd", vec![arm, wasi]);
        let e = check(&mem, "noamd", None).unwrap_err();
        let Rejection::NoPlatform { platforms, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(platforms, &["linux/arm64", "wasip1/wasm"]);

        // A child without platform counts as linux/amd64; nested indexes resolve too.
        let bare = child(&mem, &digest, None);
        let inner = index(&mut mem, "inner", vec![bare]);
        let inner_bytes = mem.blob_bytes(&inner);
        let outer =
            json!({ "mediaType": MEDIA_OCI_INDEX, "digest": inner, "size": inner_bytes.len() });
        index(&mut mem, "outer", vec![outer]);
        assert_eq!(check(&mem, "outer", None).unwrap().manifest_digest, digest);
    }

    #[test]
    fn an_index_child_must_match_its_descriptor() {
        let (mut mem, digest) = built();
        let mut amd = child(&mem, &digest, Some(("linux", "amd64")));
        amd["size"] = json!(1);
        index(&mut mem, "i", vec![amd]);
        assert!(matches!(
            check(&mem, "i", None).unwrap_err(),
            Rejection::SizeMismatch { .. }
        ));
    }

    #[test]
    fn docker_pull_problems_are_warnings() {
        let mut mem = Mem::default();
        let gz = gzip(&layer_tar(&module()).unwrap()).unwrap();
        let l = mem.desc(MEDIA_OCI_LAYER_GZIP, &gz);
        let cfg = mem.desc(MEDIA_OCI_CONFIG, br#"{"created":"2026-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#);
        mem.put(
            "x",
            MEDIA_OCI_MANIFEST,
            &json!({ "schemaVersion": 2, "config": cfg, "layers": [l],
            "annotations": { ANNOTATION_VARIANT: "compat" } }),
        );
        let c = check(&mem, "x", None).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("diff_ids") && c.warnings[1].contains("created"));
    }
}
