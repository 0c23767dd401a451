//! Trust-domain migration: istiod's `pilot/pkg/security/trustdomain` (`bundle.go`,
//! `util.go`), applied when a policy is compiled (`model.go` `MigrateTrustDomain`).
//!
//! The bundle is the workload's `trustDomain` (default `cluster.local`) then its
//! `trustDomainAliases`. A principal `td/ns/N/sa/S` (exactly five `/`-separated parts, `td`
//! not `*`) whose `td` is in the bundle (or matches one of its `*` patterns either way), or is
//! `cluster.local` (which always means "the local trust domain"), becomes one principal per
//! bundle entry (an entry that the principal's own `*td` pattern covers keeps it as written);
//! any other principal is kept. A `trustDomains` value that is a bundle entry becomes every
//! entry. Cost: at config load only.

/// The local trust domain and its aliases, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bundle {
    domains: Vec<String>,
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle::new("cluster.local", &[])
    }
}

const CLUSTER_LOCAL: &str = "cluster.local";

impl Bundle {
    pub(crate) fn new(trust_domain: &str, aliases: &[String]) -> Self {
        let mut domains = vec![trust_domain.to_string()];
        domains.extend(aliases.iter().cloned());
        Bundle { domains }
    }

    /// `ReplaceTrustDomainAliases`.
    pub(crate) fn replace_aliases(&self, principals: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for p in principals {
            let parts: Vec<&str> = p.split('/').collect();
            if parts.len() != 5 || parts[0] == "*" {
                out.push(p.clone());
                continue;
            }
            let td = parts[0];
            if !(string_match(td, &self.domains) || td == CLUSTER_LOCAL) {
                out.push(p.clone());
                continue;
            }
            let mut mine: Vec<String> = Vec::new();
            for d in &self.domains {
                let new = if suffix_match(d, td) {
                    p.clone()
                } else {
                    format!("{d}/{}", parts[1..].join("/"))
                };
                if !mine.contains(&new) {
                    mine.push(new);
                }
            }
            out.extend(mine);
        }
        out
    }

    /// `ExpandTrustDomainAliases`.
    pub(crate) fn expand_aliases(&self, values: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in values {
            let add: Vec<String> = if self.domains.contains(v) {
                self.domains.clone()
            } else {
                vec![v.clone()]
            };
            for a in add {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

fn string_match(a: &str, list: &[String]) -> bool {
    list.iter().any(|s| {
        a == s
            || s == "*"
            || prefix_match(a, s)
            || prefix_match(s, a)
            || suffix_match(a, s)
            || suffix_match(s, a)
    })
}

fn prefix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
}

fn suffix_match(a: &str, pattern: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|p| a.ends_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Cases of istiod's `bundle_test.go` `TestReplaceTrustDomainAliases`.
    #[test]
    fn principals_follow_istiod() {
        let b = Bundle::new("cluster.local", &v(&["td1", "td2"]));
        assert_eq!(
            b.replace_aliases(&v(&["cluster.local/ns/foo/sa/bar"])),
            v(&[
                "cluster.local/ns/foo/sa/bar",
                "td1/ns/foo/sa/bar",
                "td2/ns/foo/sa/bar"
            ])
        );
        // A principal of another trust domain is kept as written.
        assert_eq!(
            b.replace_aliases(&v(&["other/ns/foo/sa/bar"])),
            v(&["other/ns/foo/sa/bar"])
        );
        // `cluster.local` always means the local trust domain.
        let moved = Bundle::new("td-new", &[]);
        assert_eq!(
            moved.replace_aliases(&v(&["cluster.local/ns/foo/sa/bar"])),
            v(&["td-new/ns/foo/sa/bar"])
        );
        // Not enforced: `*` trust domain, not five parts.
        assert_eq!(
            b.replace_aliases(&v(&["*/ns/foo/sa/bar", "foo/sa/bar", "*"])),
            v(&["*/ns/foo/sa/bar", "foo/sa/bar", "*"])
        );
        // A `*td` pattern keeps itself for the domains it covers.
        let b = Bundle::new("old-td", &v(&["new-td", "x"]));
        assert_eq!(
            b.replace_aliases(&v(&["*-td/ns/foo/sa/bar"])),
            v(&["*-td/ns/foo/sa/bar", "x/ns/foo/sa/bar"])
        );
    }

    #[test]
    fn trust_domain_values_expand_to_the_bundle() {
        let b = Bundle::new("td1", &v(&["td2"]));
        assert_eq!(
            b.expand_aliases(&v(&["td2", "other"])),
            v(&["td1", "td2", "other"])
        );
        assert_eq!(b.expand_aliases(&v(&["other"])), v(&["other"]));
    }

    /// istiod's golden files (`pilot/pkg/security/authz/builder/testdata/http`): the
    /// principals each input becomes in the golden RBAC output.
    #[test]
    fn golden_files() {
        // simple-policy-td-aliases: NewBundle("td1", ["cluster.local"]).
        let b = Bundle::new("td1", &v(&["cluster.local"]));
        assert_eq!(
            b.replace_aliases(&v(&["cluster.local/ns/rule[0]/sa/from[0]-principal[0]"])),
            v(&[
                "td1/ns/rule[0]/sa/from[0]-principal[0]",
                "cluster.local/ns/rule[0]/sa/from[0]-principal[0]"
            ])
        );
        // simple-policy-multiple-td-aliases: NewBundle("td1", ["cluster.local", "some-td"]).
        let b = Bundle::new("td1", &v(&["cluster.local", "some-td"]));
        assert_eq!(
            b.replace_aliases(&v(&["some-td/ns/rule[0]/sa/from[1]-principal[0]"])),
            v(&[
                "td1/ns/rule[0]/sa/from[1]-principal[0]",
                "cluster.local/ns/rule[0]/sa/from[1]-principal[0]",
                "some-td/ns/rule[0]/sa/from[1]-principal[0]"
            ])
        );
        // td-aliases-source-principal: NewBundle("new-td", ["old-td", "some-trustdomain"]).
        let b = Bundle::new("new-td", &v(&["old-td", "some-trustdomain"]));
        assert_eq!(
            b.replace_aliases(&v(&["*", "*/ns/foo/sa/all-td", "*-td/ns/foo/sa/prefix-td"])),
            v(&[
                "*",
                "*/ns/foo/sa/all-td",
                "*-td/ns/foo/sa/prefix-td",
                "some-trustdomain/ns/foo/sa/prefix-td"
            ])
        );
    }

    /// trust-domains-in/out: `trustDomains: [cluster.local, another.local]`, `notTrustDomains:
    /// ["bad*", untrusted]` become prefix `spiffe://cluster.local/`, `spiffe://another.local/`,
    /// and NOT(regex `spiffe://bad[^/]*/.*` or prefix `spiffe://untrusted/`).
    #[test]
    fn trust_domain_matchers_as_in_the_golden_file() {
        use crate::authz::matcher::IdMatch;
        let ok = IdMatch::trust_domain("cluster.local");
        assert!(ok.matches("spiffe://cluster.local/ns/a/sa/b"));
        assert!(!ok.matches("spiffe://cluster.local.evil/ns/a/sa/b"));
        let bad = IdMatch::trust_domain("bad*");
        assert!(bad.matches("spiffe://bad/ns/a/sa/b"));
        assert!(bad.matches("spiffe://bad-actor.io/ns/a/sa/b"));
        assert!(!bad.matches("spiffe://good/ns/bad/sa/b"));
        assert!(!bad.matches("spiffe://bad"), "a trust domain ends with /");
        let mid = IdMatch::trust_domain("a*z");
        assert!(mid.matches("spiffe://abcz/x") && mid.matches("spiffe://az/x"));
        assert!(!mid.matches("spiffe://ab/x") && !mid.matches("spiffe://a/z/x"));
        assert!(IdMatch::trust_domain("*").matches("spiffe://x/y"));
        assert!(!IdMatch::trust_domain("*").matches("https://x/y"));
    }
}
