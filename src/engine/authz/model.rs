//! The compiled policy model and its evaluation.
//!
//! Shape (mirrors Envoy RBAC as Istio generates it, one RBAC policy per Istio rule):
//! `Policy` = OR of `Rule`s; `Rule` = (OR of `from` conjunctions) AND (OR of `to`
//! conjunctions) AND (all `when` conditions); a conjunction is an AND of `Cond`s; a `Cond`
//! is one attribute with "any of values AND none of notValues".

use super::matcher::{Cidr, HeaderMatch, IdMatch, PathMatch, RequestPrincipalMatch, StrMatch};
use crate::attrs::{AuthContext, ConnectionInfo, Needs, RequestAttributes, VerifiedJwt};
use crate::istio::authorization_policy::Action;
use crate::trace::{PolicyTrace, RuleTrace};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;

/// One attribute's matchers: matches when any of `any` matches (or `any` is empty) and none
/// of `none` matches. Never both empty (such a condition is dropped at compile time).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field<M> {
    pub any: Box<[M]>,
    pub none: Box<[M]>,
}

impl<M> Field<M> {
    pub fn new(any: Vec<M>, none: Vec<M>) -> Option<Self> {
        if any.is_empty() && none.is_empty() {
            None
        } else {
            Some(Field {
                any: any.into(),
                none: none.into(),
            })
        }
    }

    #[inline]
    fn eval(&self, mut pred: impl FnMut(&M) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&mut pred)) && !self.none.iter().any(pred)
    }
}

/// Where a `request.headers[...]` condition reads its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderName {
    Authority,
    Method,
    Path,
    Scheme,
    /// A regular header, name lower-cased.
    Regular(Box<str>),
}

impl HeaderName {
    pub fn new(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            // Envoy's request header map files the legacy `host` under `:authority`
            // (HTTP/1's Host becomes `:authority`), so RBAC's matcher on `host` reads it.
            ":authority" | "host" => HeaderName::Authority,
            ":method" => HeaderName::Method,
            ":path" => HeaderName::Path,
            ":scheme" => HeaderName::Scheme,
            _ => HeaderName::Regular(lower.into()),
        }
    }
}

/// One compiled condition on one request attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    /// `principals`, `namespaces`, `serviceAccounts` and their `when` keys: matched against
    /// each URI SAN of a verified client certificate (Envoy `authenticated.principal_name`).
    PeerId(Field<IdMatch>),
    /// `requestPrincipals`, `request.auth.principal`: JWT payload `iss` AND `sub`.
    RequestPrincipal(Field<RequestPrincipalMatch>),
    /// `ipBlocks`, `source.ip` (Envoy `direct_remote_ip`).
    DirectRemoteIp(Field<Cidr>),
    /// `remoteIpBlocks`, `remote.ip` (Envoy `remote_ip`).
    RemoteIp(Field<Cidr>),
    /// `destination.ip` (Envoy `destination_ip`).
    DestinationIp(Field<Cidr>),
    /// `ports`, `destination.port` (Envoy `destination_port`).
    DestinationPort(Field<u16>),
    /// `hosts`: `:authority`, case-insensitive, port not stripped.
    Host(Field<HeaderMatch>),
    /// `methods`: `:method`.
    Method(Field<HeaderMatch>),
    /// `paths`: the path without query and fragment.
    Path(Field<PathMatch>),
    /// `request.headers[name]`.
    Header(HeaderName, Field<HeaderMatch>),
    /// `connection.sni` (Envoy `requested_server_name`; empty when there is no SNI).
    Sni(Field<StrMatch>),
    /// `request.auth.claims[a][b]`, `request.auth.audiences` (`aud`),
    /// `request.auth.presenter` (`azp`): a string claim, or any string element of a list claim.
    Claim(Box<[Box<str>]>, Field<StrMatch>),
}

impl Cond {
    /// The connection facts this condition reads.
    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        match self {
            Cond::PeerId(_) => n.peer_identity = true,
            Cond::DirectRemoteIp(_) => {
                n.source_address = true;
                n.direct_remote = true;
            }
            Cond::RemoteIp(_) => n.source_address = true,
            Cond::DestinationIp(_) | Cond::DestinationPort(_) => n.destination = true,
            Cond::Sni(_) => n.sni = true,
            Cond::RequestPrincipal(_)
            | Cond::Host(_)
            | Cond::Method(_)
            | Cond::Path(_)
            | Cond::Header(..)
            | Cond::Claim(..) => {}
        }
        n
    }
}

/// Request facts looked up once per evaluation and shared by every condition.
pub(crate) struct Ctx<'a> {
    req: &'a RequestAttributes,
    path: &'a str,
    /// The client certificate's names Envoy's `authenticated` matcher tries, in its order
    /// (URI SANs, DNS SANs, subject); nothing without mTLS.
    peer: Option<&'a ConnectionInfo>,
    direct_ip: Option<IpAddr>,
    remote_ip: Option<IpAddr>,
    dest_ip: Option<IpAddr>,
    dest_port: Option<u16>,
    sni: &'a str,
    jwt: Option<&'a VerifiedJwt>,
    /// The request principal's (iss, sub), looked up in the claims when a condition first
    /// asks (most requests meet no principal condition).
    principal: OnceCell<(Option<&'a str>, Option<&'a str>)>,
}

impl<'a> Ctx<'a> {
    pub fn new(req: &'a RequestAttributes, auth: &'a AuthContext) -> Self {
        let peer = req.connection.mtls.then_some(&req.connection);
        let jwt = auth.jwt.as_deref();
        Ctx {
            req,
            path: req.path_only(),
            peer,
            direct_ip: req.direct_remote_ip(),
            remote_ip: req.remote_ip(),
            dest_ip: req.destination.map(|a| a.ip()),
            dest_port: req.destination.map(|a| a.port()),
            sni: req.connection.sni.as_deref().unwrap_or(""),
            jwt,
            principal: OnceCell::new(),
        }
    }

    /// The request principal's issuer and subject. The payload is what Envoy's metadata
    /// matchers see; the struct fields are a fallback for a payload without the claim (a
    /// subject of "" means "no sub").
    fn principal(&self) -> (Option<&'a str>, Option<&'a str>) {
        *self.principal.get_or_init(|| {
            let Some(jwt) = self.jwt else {
                return (None, None);
            };
            let part = |name: &str, fallback: &'a str| match jwt.claims.get(name) {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => None,
                None => (!fallback.is_empty()).then_some(fallback),
            };
            (part("iss", &jwt.issuer), part("sub", &jwt.subject))
        })
    }

    /// Envoy's `AuthenticatedMatcher` order: every URI SAN, every DNS SAN, the subject.
    fn peer_names(&self) -> impl Iterator<Item = &'a str> {
        self.peer.into_iter().flat_map(|c| {
            c.peer_uri_sans
                .iter()
                .chain(&c.peer_dns_sans)
                .chain(&c.peer_subject)
                .map(String::as_str)
        })
    }

    /// The path without query and fragment, as `paths` match it.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// A header's value as Envoy's header matcher sees it: repeated headers are joined
    /// with `,`; None when absent.
    fn header(&self, name: &HeaderName) -> Option<Cow<'a, str>> {
        let non_empty = |s: &'a str| (!s.is_empty()).then_some(Cow::Borrowed(s));
        match name {
            HeaderName::Authority => non_empty(&self.req.host),
            HeaderName::Method => non_empty(&self.req.method),
            HeaderName::Path => non_empty(&self.req.path),
            HeaderName::Scheme => non_empty(&self.req.scheme),
            HeaderName::Regular(n) => {
                let mut values = self
                    .req
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.as_str());
                let first = values.next()?;
                match values.next() {
                    None => Some(Cow::Borrowed(first)),
                    Some(second) => {
                        let mut joined = format!("{first},{second}");
                        for v in values {
                            joined.push(',');
                            joined.push_str(v);
                        }
                        Some(Cow::Owned(joined))
                    }
                }
            }
        }
    }

    /// True when `pred` holds for some single value of a regular header.
    fn each_header_value(&self, name: &HeaderName, mut pred: impl FnMut(&str) -> bool) -> bool {
        let HeaderName::Regular(n) = name else {
            return false;
        };
        self.req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .any(|(_, v)| pred(v))
    }

    fn claim(&self, path: &[Box<str>]) -> Option<&'a Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.jwt?.claims.get(&**first)?;
        for key in rest {
            value = value.as_object()?.get(&**key)?;
        }
        Some(value)
    }
}

impl Cond {
    pub fn matches(&self, ctx: &Ctx) -> bool {
        match self {
            Cond::PeerId(f) => f.eval(|m| ctx.peer_names().any(|name| m.matches(name))),
            Cond::RequestPrincipal(f) => f.eval(|m| {
                let (iss, sub) = ctx.principal();
                m.matches(iss, sub)
            }),
            Cond::DirectRemoteIp(f) => f.eval(|c| ctx.direct_ip.is_some_and(|ip| c.contains(ip))),
            Cond::RemoteIp(f) => f.eval(|c| ctx.remote_ip.is_some_and(|ip| c.contains(ip))),
            Cond::DestinationIp(f) => f.eval(|c| ctx.dest_ip.is_some_and(|ip| c.contains(ip))),
            Cond::DestinationPort(f) => f.eval(|p| ctx.dest_port == Some(*p)),
            Cond::Host(f) => {
                let host = (!ctx.req.host.is_empty()).then_some(ctx.req.host.as_str());
                f.eval(|m| m.matches_ignore_case(host))
            }
            Cond::Method(f) => {
                let method = (!ctx.req.method.is_empty()).then_some(ctx.req.method.as_str());
                f.eval(|m| m.matches(method))
            }
            Cond::Path(f) => f.eval(|m| m.matches(ctx.path)),
            Cond::Header(name, f) => {
                let value = ctx.header(name);
                // Envoy 1.40 matches a repeated header on the comma-joined value and on each
                // single value (the differential test shows both).
                let repeated = matches!(value, Some(Cow::Owned(_)));
                f.eval(|m| {
                    m.matches(value.as_deref())
                        || (repeated && ctx.each_header_value(name, |v| m.matches(Some(v))))
                })
            }
            Cond::Sni(f) => f.eval(|m| m.matches(ctx.sni)),
            Cond::Claim(path, f) => {
                let value = ctx.claim(path);
                f.eval(|m| claim_matches(value, m))
            }
        }
    }
}

/// Istio's claim matcher: a string claim matches directly, a list claim when any string
/// element matches; anything else (missing, number, object) does not match.
fn claim_matches(value: Option<&Value>, m: &StrMatch) -> bool {
    match value {
        Some(Value::String(s)) => m.matches(s),
        Some(Value::Array(items)) => items
            .iter()
            .any(|v| matches!(v, Value::String(s) if m.matches(s))),
        _ => false,
    }
}

/// One Istio rule, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    /// Index in the policy's `rules` (kept when earlier rules were dropped).
    pub index: usize,
    /// Alternatives from `from[]`; empty = any source.
    pub from: Box<[Box<[Cond]>]>,
    /// Alternatives from `to[]`; empty = any operation.
    pub to: Box<[Box<[Cond]>]>,
    pub when: Box<[Cond]>,
    /// Precomputed decision reason naming the policy and rule.
    pub reason: Box<str>,
}

impl Rule {
    pub fn matches(&self, ctx: &Ctx) -> bool {
        let all = |conds: &[Cond]| conds.iter().all(|c| c.matches(ctx));
        all(&self.when)
            && (self.to.is_empty() || self.to.iter().any(|c| all(c)))
            && (self.from.is_empty() || self.from.iter().any(|c| all(c)))
    }
}

/// One applicable AuthorizationPolicy, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// `namespace/name`.
    pub name: String,
    /// Empty = never matches (no `rules`, or every rule dropped).
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Every condition of every rule.
    pub fn conds(&self) -> impl Iterator<Item = &Cond> {
        self.rules.iter().flat_map(|r| {
            r.from
                .iter()
                .chain(r.to.iter())
                .flat_map(|c| c.iter())
                .chain(r.when.iter())
        })
    }

    /// The connection facts evaluating this policy may read.
    pub fn needs(&self) -> Needs {
        self.conds()
            .fold(Needs::default(), |n, c| n.union(c.needs()))
    }

    /// This policy with each rule's first failing clause, for [`crate::Trace`].
    pub fn trace(&self, ctx: &Ctx, action: Action, dry_run: bool, evaluated: bool) -> PolicyTrace {
        PolicyTrace {
            name: self.name.clone(),
            action,
            dry_run,
            evaluated,
            rules: self
                .rules
                .iter()
                .map(|r| RuleTrace {
                    index: r.index,
                    mismatch: r.mismatch(ctx),
                })
                .collect(),
        }
    }

    /// The first matching rule.
    pub fn matching_rule(&self, ctx: &Ctx) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(ctx))
    }
}

// Explaining a mismatch (`Engine::decide_traced`): off the request path.

impl Cond {
    /// The attribute this condition reads and what the request has there, for a person.
    /// Header values and claims are not shown (they may be secrets); their presence is.
    fn describe(&self, ctx: &Ctx) -> String {
        let shown = |v: Option<&str>| v.map_or_else(|| "absent".to_string(), |v| format!("{v:?}"));
        match self {
            Cond::PeerId(_) => {
                let names: Vec<&str> = ctx.peer_names().collect();
                if names.is_empty() {
                    "peer identity (none: no client certificate)".into()
                } else {
                    format!("peer identity {:?}", names.join(", "))
                }
            }
            Cond::RequestPrincipal(_) => match ctx.principal() {
                (Some(i), Some(s)) => format!("request principal \"{i}/{s}\""),
                _ => "request principal (none: no verified token with iss and sub)".into(),
            },
            Cond::DirectRemoteIp(_) => format!("source IP {}", shown_ip(ctx.direct_ip)),
            Cond::RemoteIp(_) => format!("remote IP {}", shown_ip(ctx.remote_ip)),
            Cond::DestinationIp(_) => format!("destination IP {}", shown_ip(ctx.dest_ip)),
            Cond::DestinationPort(_) => match ctx.dest_port {
                Some(p) => format!("port {p}"),
                None => "port (unknown)".into(),
            },
            Cond::Host(_) => format!("host {}", shown(Some(ctx.req.host.as_str()))),
            Cond::Method(_) => format!("method {}", shown(Some(ctx.req.method.as_str()))),
            Cond::Path(_) => format!("path {}", shown(Some(ctx.path))),
            Cond::Header(name, _) => {
                let state = if ctx.header(name).is_some() {
                    "present"
                } else {
                    "absent"
                };
                format!("header {} ({state})", header_label(name))
            }
            Cond::Sni(_) => format!("SNI {}", shown((!ctx.sni.is_empty()).then_some(ctx.sni))),
            Cond::Claim(path, _) => {
                let state = if ctx.claim(path).is_some() {
                    "present"
                } else {
                    "absent"
                };
                format!("claim {} ({state})", path.join("."))
            }
        }
    }
}

fn shown_ip(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "(unknown)".to_string(), |ip| ip.to_string())
}

fn header_label(name: &HeaderName) -> &str {
    match name {
        HeaderName::Authority => ":authority",
        HeaderName::Method => ":method",
        HeaderName::Path => ":path",
        HeaderName::Scheme => ":scheme",
        HeaderName::Regular(n) => n,
    }
}

impl Rule {
    /// None when the rule matches; otherwise its first failing clause, checked in the
    /// order [`Rule::matches`] uses (`when`, `to`, `from`).
    pub fn mismatch(&self, ctx: &Ctx) -> Option<String> {
        fn failing<'c>(conds: &'c [Cond], ctx: &Ctx) -> Option<&'c Cond> {
            conds.iter().find(|c| !c.matches(ctx))
        }
        if let Some(c) = failing(&self.when, ctx) {
            return Some(format!("when: {} does not match", c.describe(ctx)));
        }
        let alternatives = |name: &str, list: &[Box<[Cond]>]| -> Option<String> {
            if list.is_empty() || list.iter().any(|conds| failing(conds, ctx).is_none()) {
                return None;
            }
            let why: Vec<String> = list
                .iter()
                .enumerate()
                .filter_map(|(i, conds)| {
                    let c = failing(conds, ctx)?;
                    let at = if list.len() > 1 {
                        format!("{name}[{i}]")
                    } else {
                        name.to_string()
                    };
                    Some(format!("{at}: {} does not match", c.describe(ctx)))
                })
                .collect();
            Some(why.join("; "))
        };
        alternatives("to", &self.to).or_else(|| alternatives("from", &self.from))
    }
}
