//! `meshguard oci ...`: build the image layout, check an image as the consumers would, and
//! render the deploy manifests with an image's digest.

use super::build::{build, write_layout, BuildOptions};
use super::check::{check, Checked, Source};
use super::layout::Layout;
use super::registry::{Reference, Registry};
use crate::Result;
use std::path::{Path, PathBuf};

pub const USAGE: &str = "\
usage:
  meshguard oci build --wasm FILE --out DIR [--tag TAG] [--version V] [--revision R]
                      [--source URL] [--digest-file FILE]
      Writes the module as a reproducible OCI image layout (Istio's compat variant: one
      tar+gzip layer holding plugin.wasm) into DIR and prints the manifest digest (the sha256
      of WasmPlugin and EnvoyExtensionPolicy) and the sha256 of plugin.wasm. Defaults: --tag
      and --version the crate version, --revision unknown, --source unknown.
  meshguard oci check <DIR[:TAG] | [oci://]HOST:PORT/REPO[:TAG|@DIGEST]> [--sha256 HEX]
                      [--extract FILE] [--expect-wasm FILE]
      Checks an image layout or an image in a plain-HTTP registry the way Istio and Envoy
      Gateway pull it: index -> linux/amd64, manifest kind -> last layer media type, blobs
      against their digests, plugin.wasm in the tar+gzip layer, the \\0asm magic; with
      --sha256, that the value is the manifest digest. --extract writes plugin.wasm;
      --expect-wasm fails unless plugin.wasm equals FILE byte for byte.
  meshguard oci render --layout DIR[:TAG] --image REGISTRY/REPO:TAG --out DIR TEMPLATE...
      Writes each TEMPLATE (deploy/*.yaml) into --out with ${MESHGUARD_IMAGE} and
      ${MESHGUARD_IMAGE_SHA256} replaced by the image reference and the checked layout's
      manifest digest.";

/// Runs `meshguard oci ARGS`.
pub fn run(args: &[&str]) -> Result<()> {
    match args {
        ["build", rest @ ..] => cmd_build(rest),
        ["check", target, rest @ ..] => cmd_check(target, rest),
        ["render", rest @ ..] => cmd_render(rest),
        [] | ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown oci command\n{USAGE}").into()),
    }
}

/// `--name value` pairs (repeatable) and positional arguments.
struct Args<'a> {
    pairs: Vec<(&'a str, &'a str)>,
    positional: Vec<&'a str>,
}

impl<'a> Args<'a> {
    fn parse(args: &[&'a str], valued: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(&a) = it.next() {
            if valued.contains(&a) {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                pairs.push((a, *v));
            } else if a.starts_with("--") {
                return Err(format!("unknown argument {a:?}\n{USAGE}").into());
            } else {
                positional.push(a);
            }
        }
        Ok(Self { pairs, positional })
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    fn need(&self, name: &str) -> Result<&'a str> {
        self.get(name)
            .ok_or_else(|| format!("{name} is required\n{USAGE}").into())
    }
}

fn cmd_build(args: &[&str]) -> Result<()> {
    let a = Args::parse(
        args,
        &[
            "--wasm",
            "--out",
            "--tag",
            "--version",
            "--revision",
            "--source",
            "--digest-file",
        ],
    )?;
    if !a.positional.is_empty() {
        return Err(format!("unexpected {:?}\n{USAGE}", a.positional).into());
    }
    let wasm_path = a.need("--wasm")?;
    let out = PathBuf::from(a.need("--out")?);
    let wasm = std::fs::read(wasm_path).map_err(|e| format!("{wasm_path}: {e}"))?;
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(format!("{wasm_path}: not a wasm module (no \\0asm magic)").into());
    }
    let version = a
        .get("--version")
        .unwrap_or(meshguard_engine::VERSION)
        .to_string();
    let opts = BuildOptions {
        tag: a.get("--tag").unwrap_or(&version).to_string(),
        source: a.get("--source").unwrap_or("unknown").to_string(),
        revision: a.get("--revision").unwrap_or("unknown").to_string(),
        version,
    };
    let image = build(&wasm, &opts)?;
    write_layout(&image, &opts.tag, &out)?;
    // Read back what was written, through the checker (the same rules as a consumer).
    let layout = Layout::open(&out)?;
    let checked = check(&layout, &opts.tag, Some(image.manifest_hex()))
        .map_err(|e| format!("{}: the written layout fails the check: {e}", out.display()))?;
    if checked.wasm != wasm {
        return Err("the written layout's plugin.wasm differs from the input".into());
    }
    if let Some(file) = a.get("--digest-file") {
        std::fs::write(file, format!("{}\n", image.manifest_digest))?;
    }
    println!(
        "wrote OCI image layout {} (tag {})",
        out.display(),
        opts.tag
    );
    println!("manifest digest: {}", image.manifest_digest);
    println!("plugin.wasm sha256: {}", image.wasm_sha256);
    println!(
        "sizes: plugin.wasm {} bytes, layer {} bytes (tar+gzip), image {} bytes (manifest {} + config {} + layer)",
        image.wasm_size,
        image.layer.len(),
        image.total_size(),
        image.manifest.len(),
        image.config.len()
    );
    println!(
        "WasmPlugin spec.sha256 / EnvoyExtensionPolicy code.image.sha256: {}",
        image.manifest_hex()
    );
    Ok(())
}

/// A layout (`DIR` or `DIR:TAG`) or a registry reference.
fn open_target(target: &str) -> Result<(Box<dyn Source>, String)> {
    let as_dir = Path::new(target);
    if as_dir.join("oci-layout").is_file() {
        return Ok((Box::new(Layout::open(as_dir)?), String::new()));
    }
    if let Some((dir, tag)) = target.rsplit_once(':') {
        if Path::new(dir).join("oci-layout").is_file() {
            return Ok((Box::new(Layout::open(Path::new(dir))?), tag.to_string()));
        }
    }
    if as_dir.exists() {
        return Err(format!("{target}: not an OCI image layout (no oci-layout file)").into());
    }
    let r = Reference::parse(target)?;
    Ok((
        Box::new(Registry::new(&r.authority, &r.repository)),
        r.reference,
    ))
}

fn print_checked(target: &str, c: &Checked) {
    println!("{target}: OK: {}", c.format);
    if let Some(index) = &c.index_digest {
        println!("index digest: {index} (resolved to linux/amd64)");
    }
    println!("manifest digest: {}", c.manifest_digest);
    println!(
        "plugin.wasm sha256: {} ({} bytes)",
        c.wasm_sha256,
        c.wasm.len()
    );
    println!("image size: {} bytes", c.image_size);
    for (k, v) in &c.annotations {
        println!("annotation {k}: {v}");
    }
    println!(
        "WasmPlugin spec.sha256 / EnvoyExtensionPolicy code.image.sha256: {}",
        c.sha256_field()
    );
    for w in &c.warnings {
        println!("warning: {w}");
    }
}

fn cmd_check(target: &str, args: &[&str]) -> Result<()> {
    let a = Args::parse(args, &["--sha256", "--extract", "--expect-wasm"])?;
    if !a.positional.is_empty() {
        return Err(format!("unexpected {:?}\n{USAGE}", a.positional).into());
    }
    let (source, reference) = open_target(target)?;
    let checked = check(source.as_ref(), &reference, a.get("--sha256"))
        .map_err(|e| format!("{target}: REJECTED: {e}"))?;
    print_checked(target, &checked);
    if let Some(file) = a.get("--expect-wasm") {
        let want = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        if want != checked.wasm {
            return Err(format!("{target}: plugin.wasm differs from {file}").into());
        }
        println!("plugin.wasm is byte-identical to {file}");
    }
    if let Some(file) = a.get("--extract") {
        std::fs::write(file, &checked.wasm).map_err(|e| format!("{file}: {e}"))?;
        println!("wrote {file}");
    }
    Ok(())
}

/// Placeholders of the deploy templates.
pub const PLACEHOLDER_IMAGE: &str = "${MESHGUARD_IMAGE}";
pub const PLACEHOLDER_SHA256: &str = "${MESHGUARD_IMAGE_SHA256}";

/// A template with the image reference and the manifest digest (hex) filled in.
pub fn render(template: &str, image: &str, sha256_hex: &str) -> Result<String> {
    let out = template
        .replace(PLACEHOLDER_IMAGE, image)
        .replace(PLACEHOLDER_SHA256, sha256_hex);
    if let Some(at) = out.find("${MESHGUARD_") {
        let rest: String = out[at..].chars().take(40).collect();
        return Err(format!("unknown placeholder at {rest:?}").into());
    }
    Ok(out)
}

fn cmd_render(args: &[&str]) -> Result<()> {
    let a = Args::parse(args, &["--layout", "--image", "--out"])?;
    let image = a.need("--image")?;
    let image = image.strip_prefix("oci://").unwrap_or(image);
    let out = PathBuf::from(a.need("--out")?);
    let (source, reference) = open_target(a.need("--layout")?)?;
    let checked = check(source.as_ref(), &reference, None).map_err(|e| format!("REJECTED: {e}"))?;
    if a.positional.is_empty() {
        return Err(format!("render needs at least one TEMPLATE\n{USAGE}").into());
    }
    std::fs::create_dir_all(&out)?;
    for t in &a.positional {
        let text = std::fs::read_to_string(t).map_err(|e| format!("{t}: {e}"))?;
        let rendered =
            render(&text, image, checked.sha256_field()).map_err(|e| format!("{t}: {e}"))?;
        let name = Path::new(t)
            .file_name()
            .ok_or_else(|| format!("{t}: no file name"))?;
        let dest = out.join(name);
        std::fs::write(&dest, rendered)?;
        println!("wrote {}", dest.display());
    }
    println!("image oci://{image}, sha256 {}", checked.sha256_field());
    Ok(())
}
