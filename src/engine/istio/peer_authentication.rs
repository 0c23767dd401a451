//! PeerAuthentication spec (istio/api `security/v1/peer_authentication.proto`).

use super::{PolicySpec, WorkloadSelector};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<MutualTls>,
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

impl PolicySpec for PeerAuthenticationSpec {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    #[serde(default)]
    pub mode: Option<String>,
}
