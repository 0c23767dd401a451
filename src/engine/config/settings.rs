//! The filter's own settings beside the Istio resources: the verified-token cache
//! (`jwtCache`, Envoy's `jwt_cache_config`) and the decision log (`decisionLog`).

use super::ConfigError;
use serde::Deserialize;

/// `jwtCache`: the per-VM verified-token cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtCacheSettings {
    /// Tokens kept (Envoy's `jwt_cache_size`).
    pub size: usize,
    /// Longer tokens are not cached (Envoy's `jwt_max_token_size`).
    pub max_token_bytes: usize,
}

impl JwtCacheSettings {
    /// Envoy's default is 100 entries; a gateway with thousands of active users misses at
    /// that size, so meshguard's default is larger (README, "Caches sized for real traffic").
    pub const DEFAULT_SIZE: usize = 1000;
    pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
    /// Bounds: the cache is per VM (one per worker), each entry a few KiB.
    pub const MAX_SIZE: usize = 1_000_000;
    pub const MAX_TOKEN_BYTES_LIMIT: usize = 64 << 10;
}

impl Default for JwtCacheSettings {
    fn default() -> Self {
        Self {
            size: Self::DEFAULT_SIZE,
            max_token_bytes: Self::DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawJwtCache {
    size: Option<u64>,
    max_token_bytes: Option<u64>,
}

impl RawJwtCache {
    /// As Envoy: 0 (or absent) means the default.
    pub(super) fn settings(self) -> Result<JwtCacheSettings, ConfigError> {
        let mut s = JwtCacheSettings::default();
        let bounded = |v: u64, max: usize, path: &str| -> Result<usize, ConfigError> {
            usize::try_from(v)
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| ConfigError::new(path, format!("must be at most {max}")))
        };
        match self.size {
            None | Some(0) => {}
            Some(n) => s.size = bounded(n, JwtCacheSettings::MAX_SIZE, "jwtCache.size")?,
        }
        match self.max_token_bytes {
            None | Some(0) => {}
            Some(n) => {
                s.max_token_bytes = bounded(
                    n,
                    JwtCacheSettings::MAX_TOKEN_BYTES_LIMIT,
                    "jwtCache.maxTokenBytes",
                )?
            }
        }
        Ok(s)
    }
}

/// `decisionLog`: one JSON line per denial, AUDIT mark and dry-run result; allowed requests
/// only when sampled. Tokens are never logged; claim values only those named here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionLogSettings {
    /// Log one allowed request in every `1 / allowSampleRate` (0 = none, 1 = all).
    pub allow_sample_rate: f64,
    /// Claims whose values the log line carries (e.g. `sub`, `groups`); none by default.
    pub claims: Vec<String>,
    /// False turns the log off entirely (denials included); default true.
    pub enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawDecisionLog {
    enabled: Option<bool>,
    allow_sample_rate: Option<f64>,
    #[serde(default)]
    claims: Vec<String>,
}

impl RawDecisionLog {
    pub(super) fn settings(self) -> Result<DecisionLogSettings, ConfigError> {
        let rate = self.allow_sample_rate.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::new(
                "decisionLog.allowSampleRate",
                "must be between 0 and 1",
            ));
        }
        if let Some(i) = self.claims.iter().position(|c| c.is_empty()) {
            return Err(ConfigError::new(
                format!("decisionLog.claims[{i}]"),
                "must not be empty",
            ));
        }
        Ok(DecisionLogSettings {
            allow_sample_rate: rate,
            claims: self.claims,
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

impl DecisionLogSettings {
    /// The default: denials, AUDIT marks and dry-run results; no allowed requests.
    pub fn on() -> Self {
        DecisionLogSettings {
            enabled: true,
            ..Default::default()
        }
    }
}
