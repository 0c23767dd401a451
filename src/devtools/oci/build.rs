//! Builds the compat-variant image of a wasm module, byte for byte reproducibly (see the
//! module docs for what is fixed), and writes it as an OCI image layout.

use super::{
    digest_of, sha256_hex, ANNOTATION_REF_NAME, ANNOTATION_REVISION, ANNOTATION_SOURCE,
    ANNOTATION_VARIANT, ANNOTATION_VERSION, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST, PLUGIN_FILE,
};
use crate::Result;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// What goes into the image besides the module.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// `org.opencontainers.image.source`: where the code lives (a repository URL).
    pub source: String,
    /// `org.opencontainers.image.revision`: the commit the module was built from.
    pub revision: String,
    /// `org.opencontainers.image.version`: the release version.
    pub version: String,
    /// The tag recorded in the layout's `index.json` (`skopeo copy oci:DIR:TAG ...`).
    pub tag: String,
}

/// One built image: the three blobs and their digests.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    /// `sha256:<hex>` of `manifest`: the value `WasmPlugin.spec.sha256` wants (as hex).
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    /// Lowercase hex sha256 of the module (Envoy's `code.remote.sha256`).
    pub wasm_sha256: String,
    pub wasm_size: usize,
}

impl Image {
    /// The manifest digest without `sha256:`: what the consumers' `sha256` fields hold.
    pub fn manifest_hex(&self) -> &str {
        self.manifest_digest.trim_start_matches("sha256:")
    }

    /// Bytes a pull transfers: manifest, config and layer.
    pub fn total_size(&self) -> usize {
        self.manifest.len() + self.config.len() + self.layer.len()
    }
}

/// The uncompressed layer: one ustar entry `plugin.wasm` (mode 0644, uid/gid 0, mtime 0, no
/// user or group name), then tar's two zero blocks.
pub fn layer_tar(wasm: &[u8]) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm)?;
    Ok(builder.into_inner()?)
}

/// gzip with no file name, no comment, mtime 0 and OS byte 255 (unknown), best compression.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest_of(bytes), "size": bytes.len() })
}

/// Deterministic JSON: serde_json writes object keys in a fixed order (sorted, or insertion
/// order with `preserve_order`; both are fixed for the values built here) and no whitespace.
fn to_bytes(value: &Value) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

/// Builds the image of `wasm` (in memory).
pub fn build(wasm: &[u8], opts: &BuildOptions) -> Result<Image> {
    let tar = layer_tar(wasm)?;
    let layer = gzip(&tar)?;
    // No `created`, no `history`: they would change with every build. linux/amd64 is what an
    // index resolves to for both consumers and what `docker pull` on amd64 expects.
    let config = to_bytes(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [digest_of(&tar)] },
    }))?;
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": descriptor(MEDIA_OCI_CONFIG, &config),
        "layers": [descriptor(MEDIA_OCI_LAYER_GZIP, &layer)],
        "annotations": {
            ANNOTATION_VARIANT: "compat",
            ANNOTATION_SOURCE: opts.source,
            ANNOTATION_REVISION: opts.revision,
            ANNOTATION_VERSION: opts.version,
        },
    }))?;
    Ok(Image {
        manifest_digest: digest_of(&manifest),
        config_digest: digest_of(&config),
        layer_digest: digest_of(&layer),
        wasm_sha256: sha256_hex(wasm),
        wasm_size: wasm.len(),
        manifest,
        config,
        layer,
    })
}

/// The layout's `index.json`: the one manifest, tagged `tag`, platform linux/amd64.
pub fn layout_index(image: &Image, tag: &str) -> Result<Vec<u8>> {
    let mut desc = descriptor(MEDIA_OCI_MANIFEST, &image.manifest);
    desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    desc["annotations"] = json!({ ANNOTATION_REF_NAME: tag });
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [desc],
    }))
}

/// Writes `image` as an OCI image layout in `out`: `oci-layout`, `index.json` and
/// `blobs/sha256/<hex>`. `out` must be absent, empty, or an earlier layout (whose `blobs/` and
/// `index.json` are replaced, so nothing stale stays).
pub fn write_layout(image: &Image, tag: &str, out: &Path) -> Result<()> {
    if out.exists() {
        let is_layout = out.join("oci-layout").is_file();
        let empty = std::fs::read_dir(out)?.next().is_none();
        if !is_layout && !empty {
            return Err(format!(
                "{}: exists and is not an OCI image layout (no oci-layout file); refusing to write into it",
                out.display()
            )
            .into());
        }
        if out.join("blobs").exists() {
            std::fs::remove_dir_all(out.join("blobs"))?;
        }
    }
    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    for (digest, bytes) in [
        (&image.layer_digest, &image.layer),
        (&image.config_digest, &image.config),
        (&image.manifest_digest, &image.manifest),
    ] {
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes)?;
    }
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(out.join("index.json"), layout_index(image, tag)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::io::Read;

    fn opts() -> BuildOptions {
        BuildOptions {
            source: "https://example.test/meshguard".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            version: "0.1.0".into(),
            tag: "0.1.0".into(),
        }
    }

    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
        m
    }

    #[test]
    fn two_builds_are_identical() {
        let a = build(&module(), &opts()).unwrap();
        let b = build(&module(), &opts()).unwrap();
        assert_eq!(a.manifest, b.manifest);
        assert_eq!(a.layer, b.layer);
        assert_eq!(a.config, b.config);
        assert_eq!(a.manifest_digest, b.manifest_digest);
        // Another revision is another manifest (annotations), same layer.
        let mut o = opts();
        o.revision = "fedcba".into();
        let c = build(&module(), &o).unwrap();
        assert_ne!(a.manifest_digest, c.manifest_digest);
        assert_eq!(a.layer_digest, c.layer_digest);
    }

    #[test]
    fn layer_is_one_fixed_entry() {
        let img = build(&module(), &opts()).unwrap();
        // gzip header: magic, deflate, no flags (no name/comment/extra), mtime 0, XFL 2 (best), OS 255.
        assert_eq!(&img.layer[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&img.layer[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        let h = e.header().clone();
        assert_eq!(h.path().unwrap().to_str(), Some("plugin.wasm"));
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.username().unwrap(), Some(""));
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(body, module());
        assert!(entries.next().is_none(), "exactly one entry");
    }

    #[test]
    fn manifest_and_config_carry_what_consumers_read() {
        let img = build(&module(), &opts()).unwrap();
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["mediaType"], MEDIA_OCI_MANIFEST);
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_OCI_LAYER_GZIP);
        assert_eq!(m["layers"][0]["digest"], json!(img.layer_digest));
        assert_eq!(m["annotations"][ANNOTATION_VARIANT], "compat");
        assert_eq!(m["annotations"][ANNOTATION_VERSION], "0.1.0");
        assert_eq!(m["annotations"][ANNOTATION_SOURCE], opts().source);
        assert_eq!(m["annotations"][ANNOTATION_REVISION], opts().revision);
        let c: Value = serde_json::from_slice(&img.config).unwrap();
        assert!(c.get("created").is_none() && c.get("history").is_none());
        assert_eq!(
            (c["os"].as_str(), c["architecture"].as_str()),
            (Some("linux"), Some("amd64"))
        );
        assert!(!String::from_utf8(img.manifest.clone())
            .unwrap()
            .contains(' '));
    }

    #[test]
    fn layout_refuses_a_foreign_directory_and_replaces_its_own() {
        let dir = std::env::temp_dir().join(format!("meshguard-oci-build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("precious"), b"x").unwrap();
        let img = build(&module(), &opts()).unwrap();
        assert!(write_layout(&img, "t", &dir).is_err());
        std::fs::remove_file(dir.join("precious")).unwrap();
        write_layout(&img, "t", &dir).unwrap();
        let stale = dir.join("blobs/sha256/stale");
        std::fs::write(&stale, b"old").unwrap();
        write_layout(&img, "t", &dir).unwrap();
        assert!(!stale.exists());
        assert_eq!(
            std::fs::read_dir(dir.join("blobs/sha256")).unwrap().count(),
            3
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
