//! The module shipped as an OCI image, the way Istio (`WasmPlugin`, `url: oci://...`) and Envoy
//! Gateway (`EnvoyExtensionPolicy`, `code.type: Image`) pull wasm filters, and a checker of
//! exactly what those two consumers check when they pull one.
//!
//! **The image** ([`build()`]) is the *compat* variant of the Wasm image spec (solo-io/wasm
//! `spec-compat.md`), which both consumers accept: an OCI manifest
//! (`application/vnd.oci.image.manifest.v1+json`) whose last (only) layer is
//! `application/vnd.oci.image.layer.v1.tar+gzip` holding one file, `plugin.wasm`, with the
//! annotation `module.wasm.image/variant: compat` and the OCI `source`/`revision`/`version`
//! annotations. It is reproducible: the same `plugin.wasm` and annotations give the same bytes,
//! so the same manifest digest (one tar entry with mtime 0, uid/gid 0, mode 0644 and no user
//! names; gzip with no file name, mtime 0 and OS byte 255; an image config without `created`
//! or `history`; JSON with a fixed key order and no whitespace). The compressed bytes depend on
//! the deflate implementation, pinned by `Cargo.lock` (flate2 with miniz_oxide).
//!
//! **The checker** ([`check()`]) reproduces the fetch path of Istio's `pkg/wasm`
//! (`imagefetcher.go`, `cache.go`) and Envoy Gateway's `internal/wasm` (a fork of it), both on
//! go-containerregistry:
//! - an index (OCI index or Docker manifest list) resolves to its first child whose platform is
//!   linux/amd64, a child without `platform` counting as linux/amd64 (ggcr `childByPlatform`);
//!   nested indexes resolve the same way;
//! - the digest compared with `WasmPlugin.spec.sha256` and with `EnvoyExtensionPolicy`'s
//!   `code.image.sha256` is the sha256 of the resolved image **manifest** (lowercase hex, no
//!   `sha256:` prefix; ggcr's `img.Digest().Hex`), not the digest of an index and not the wasm
//!   file's; Envoy Gateway then hands Envoy the *file's* sha256 in `code.remote.sha256`;
//! - a Docker schema 2 manifest (by its own `mediaType` field) needs its last layer to be
//!   `application/vnd.docker.image.rootfs.diff.tar.gzip`; any other manifest is tried as the
//!   compat variant (last layer `application/vnd.oci.image.layer.v1.tar+gzip`), then as the
//!   *oci* variant (exactly two layers, one `application/vnd.module.wasm.content.layer.v1+wasm`
//!   holding the raw module);
//! - a tar+gzip layer is gunzipped (multi-member, as Go's reader), limited to 256 MiB (Envoy
//!   Gateway's `maxWasmSize`; Istio's `ISTIO_WASM_MAX_BINARY_SIZE_BYTES`, default the same),
//!   and the first tar entry whose base name is `plugin.wasm` is the module (so
//!   `x/plugin.wasm` is found too);
//! - every blob must hash to its descriptor's digest (ggcr verifies while reading) and a
//!   manifest fetched by digest must hash to that digest;
//! - the module must be at least 8 bytes and start with `\0asm` (`isValidWasmBinary`).
//!
//! Not checked here, because it depends on where the registry is, not on the image: recent
//! Istio (`ssrf.go`) refuses registries that resolve to link-local addresses (and a token
//! realm on a private or loopback address); loopback and private registries are allowed.
//!
//! Neither consumer accepts the CNCF wasm artifact (`application/vnd.wasm.config.v0+json` with
//! an `application/wasm` layer); the checker rejects it as they do.
//!
//! Sources: an OCI image layout directory ([`Layout`]) or a registry over plain HTTP
//! ([`registry::Registry`], the registry API v2 as skopeo and the consumers use it; for an HTTPS
//! registry with authentication, `skopeo copy docker://... oci:DIR` and check the layout).
//! Cost: everything is read into memory once; a module is a few MiB at most.

pub mod build;
pub mod check;
pub mod cli;
pub mod layout;
pub mod registry;

pub use build::{build, BuildOptions, Image};
pub use check::{check, Checked, Format, Rejection, Source};
pub use layout::Layout;

use sha2::{Digest, Sha256};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The raw-module layer of solo's two-layer *oci* variant.
pub const MEDIA_WASM_CONTENT_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// The one file of a compat image.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Annotation naming the Wasm image variant.
pub const ANNOTATION_VARIANT: &str = "module.wasm.image/variant";
pub const ANNOTATION_SOURCE: &str = "org.opencontainers.image.source";
pub const ANNOTATION_REVISION: &str = "org.opencontainers.image.revision";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
/// The tag of a manifest in an image layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Envoy Gateway's limit on the uncompressed layer stream (`maxWasmSize`, 256 MiB).
pub const MAX_WASM_SIZE: u64 = 256 * 1024 * 1024;

/// The media types a client asks a registry for (ggcr's `remote.Get` accepts all four).
pub const MANIFEST_ACCEPT: [&str; 4] = [
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `sha256:<hex>`, the form of OCI descriptors and registry URLs.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Whether `s` is what `WasmPlugin.spec.sha256` and Envoy Gateway's `sha256` fields hold:
/// 64 lowercase hex digits (Envoy Gateway's pattern `^[a-f0-9]{64}$`; Istio compares it
/// verbatim with the lowercase hex digest).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
