//! What the policy tools (`test`, `diff`, `lint`, `graph`) read: a filter JSON
//! (docs/configuration.md) or Istio manifests (YAML or JSON, as `meshguard convert` takes
//! them), turned into the one filter JSON the engine compiles. Native only.

use crate::convert::{self, Target};
use serde_json::Value;

/// One loaded configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The filter JSON (as read, or converted from manifests with the `--namespace` /
    /// `--label` workload).
    pub json: String,
}

/// The workload options every command that reads manifests takes: `--namespace NS`,
/// `--label KEY=VALUE`, `--root-namespace NS`, `--jwks-cluster AUTHORITY=CLUSTER`. Returns
/// the rest of the arguments, in order.
pub fn target_flags<'a>(args: &[&'a str]) -> Result<(Target, Vec<&'a str>), String> {
    let mut target = Target::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    let value = |flag: &str, v: Option<&&str>| -> Result<String, String> {
        v.map(|s| s.to_string())
            .ok_or(format!("{flag} needs a value"))
    };
    let pair = |flag: &str, v: Option<&&str>| -> Result<(String, String), String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .ok_or(format!("{flag} {v:?}: expected KEY=VALUE"))
    };
    while let Some(&arg) = it.next() {
        match arg {
            "--namespace" => target.namespace = Some(value(arg, it.next())?),
            "--root-namespace" => target.root_namespace = Some(value(arg, it.next())?),
            "--label" => target.labels.push(pair(arg, it.next())?),
            "--jwks-cluster" => target.jwks_clusters.push(pair(arg, it.next())?),
            other => rest.push(other),
        }
    }
    Ok((target, rest))
}

/// Reads manifest files (`-` is standard input) as (name, text) pairs for `convert`.
pub fn read_manifests(files: &[&str]) -> Result<Vec<(String, String)>, String> {
    files
        .iter()
        .map(|&file| {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?
            };
            Ok((file.to_string(), text))
        })
        .collect()
}

/// True when `text` is a filter JSON (a JSON object that is not itself an Istio resource).
pub fn is_filter_json(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => !m.contains_key("kind") && !m.contains_key("apiVersion"),
        _ => false,
    }
}

/// Reads `file` (filter JSON or manifests) into a filter JSON for `target`'s workload.
pub fn load(file: &str, target: &Target) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    load_text(file, &text, target)
}

pub fn load_text(source: &str, text: &str, target: &Target) -> Result<Loaded, String> {
    if is_filter_json(text) {
        // The filter's own parse: an invalid config is refused here as it would be by Envoy.
        meshguard_engine::Engine::from_json(text).map_err(|e| format!("{source}: {e}"))?;
        return Ok(Loaded {
            json: text.to_string(),
        });
    }
    let out = convert::convert(&[(source.to_string(), text.to_string())], target)
        .map_err(|e| format!("{source}: {e}"))?;
    Ok(Loaded { json: out.json })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_filter_json_from_manifests() {
        assert!(is_filter_json(r#"{"workload": {}, "policies": []}"#));
        assert!(is_filter_json("{}"));
        assert!(!is_filter_json(
            r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy"}"#
        ));
        assert!(!is_filter_json("kind: AuthorizationPolicy\n"));
    }

    #[test]
    fn manifests_are_converted_for_the_target_workload() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: foo}\nspec: {}\n";
        let (t, rest) = target_flags(&["--namespace", "foo", "x"]).unwrap();
        assert_eq!(rest, ["x"]);
        let l = load_text("m.yaml", yaml, &t).unwrap();
        let v: Value = serde_json::from_str(&l.json).unwrap();
        assert_eq!(v["workload"]["namespace"], "foo");
    }
}
