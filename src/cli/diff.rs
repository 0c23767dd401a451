//! `meshguard diff OLD NEW`: which requests change decision between two policy sets. The
//! requests come from both sets' own values with their boundaries ([`crate::reqgen`]);
//! each is decided by the filter's engine under both ([`crate::sim`]). Native only.

use crate::reqgen::{describe, Plan};
use crate::sim::{RunKey, Sim};
use crate::table::Table;
use std::sync::Arc;

pub struct Report {
    pub text: String,
    /// Requests whose decision changed.
    pub changed: usize,
}

/// Decides the generated requests under `old` and `new` (filter JSONs); lists at most
/// `limit` changes.
pub fn diff(
    (old_name, old): (&str, &str),
    (new_name, new): (&str, &str),
    limit: usize,
) -> Result<Report, String> {
    let key = Arc::new(RunKey::generate()?);
    let a = Sim::new(old, key.clone()).map_err(|e| format!("{old_name}: {e}"))?;
    let b = Sim::new(new, key).map_err(|e| format!("{new_name}: {e}"))?;
    let plan = Plan::new(&[&a.config, &b.config]);
    let requests = plan.requests();
    let mut changes = Vec::new();
    let mut moved = 0;
    for r in &requests {
        let x = a.decide(r)?;
        let y = b.decide(r)?;
        if x.short() != y.short() {
            changes.push((describe(r), x, y));
        } else if x.decided_by != y.decided_by {
            moved += 1;
        }
    }
    let d = &plan.dims;
    let mut text = format!(
        "old: {old_name}\nnew: {new_name}\n{} requests from both sets' values (paths {}, methods {}, hosts {}, ports {}, peers {}, tokens {}, headers {}, sources {}); {} change decision ({moved} more keep theirs, decided by another policy or rule)\n",
        requests.len(),
        d.paths.len(),
        d.methods.len(),
        d.hosts.len(),
        d.ports.len(),
        d.peers.len(),
        d.tokens.len(),
        d.headers.len(),
        d.sources.len(),
        changes.len()
    );
    if !changes.is_empty() {
        let mut t = Table::new(&["REQUEST", "OLD", "NEW", "DECIDED BY (OLD -> NEW)"]);
        for (req, x, y) in changes.iter().take(limit) {
            t.row(vec![
                req.clone(),
                x.short(),
                y.short(),
                format!("{} -> {}", x.decided_by, y.decided_by),
            ]);
        }
        text.push('\n');
        text.push_str(&t.render());
        if changes.len() > limit {
            text.push_str(&format!(
                "... and {} more (--limit N shows more)\n",
                changes.len() - limit
            ));
        }
    }
    Ok(Report {
        text,
        changed: changes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(methods: &[&str]) -> String {
        json!({ "workload": { "namespace": "foo" }, "policies": [{
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": { "name": "p", "namespace": "foo" },
            "spec": { "rules": [{ "to": [{ "operation": { "methods": methods, "paths": ["/api/*"] } }] }] }
        }] })
        .to_string()
    }

    #[test]
    fn same_sets_change_nothing_and_a_new_method_is_found() {
        let same = diff(("a", &cfg(&["GET"])), ("b", &cfg(&["GET"])), 10).unwrap();
        assert_eq!(same.changed, 0, "{}", same.text);
        let more = diff(("a", &cfg(&["GET"])), ("b", &cfg(&["GET", "POST"])), 10).unwrap();
        assert!(more.changed > 0, "{}", more.text);
        assert!(
            more.text
                .contains("POST example.com/api/x plaintext no-token  403"),
            "{}",
            more.text
        );
    }
}
