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

/// The workload options every policy tool takes for manifests: `--namespace NS`,
/// `--label KEY=VALUE`, `--root-namespace NS`. Returns the rest of the arguments.
pub fn target_flags<'a>(args: &[&'a str]) -> Result<(Target, Vec<&'a str>), String> {
    let mut target = Target::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        match arg {
            "--namespace" => {
                target.namespace = Some(it.next().ok_or("--namespace needs a value")?.to_string())
            }
            "--root-namespace" => {
                target.root_namespace = Some(
                    it.next()
                        .ok_or("--root-namespace needs a value")?
                        .to_string(),
                )
            }
            "--label" => {
                let v = it.next().ok_or("--label needs a value")?;
                let (k, v) = v
                    .split_once('=')
                    .ok_or(format!("--label {v:?}: expected KEY=VALUE"))?;
                target.labels.push((k.to_string(), v.to_string()));
            }
            other => rest.push(other),
        }
    }
    Ok((target, rest))
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
