//! Inference clients: optional API keys, and declared consumers. With `clients.keys_file` set, every inference call
//! (HTTP and gRPC) must carry a key (`Authorization: Bearer <key>` or the configured header / metadata key): a
//! missing or wrong one gets 401 / UNAUTHENTICATED and is counted. Each answered request is counted per consumer and
//! model version, the consumer being the key's name, else the consumer header's value if it is a declared name,
//! else `other`; so the label set stays bounded, and an operator can see who called a model before promoting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::ClientsConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;

/// The consumer of requests nobody declared.
pub const OTHER: &str = "other";
/// How far back `GET /admin/models/{m}` lists callers.
const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    key: String,
}

/// Who called a model lately.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerSeen {
    pub consumer: String,
    /// Requests answered in the last day, per version.
    pub versions: BTreeMap<String, u64>,
    pub last_seen: String,
}

/// Per (model, consumer): hourly counts per version over the last day, and when it was last seen.
#[derive(Debug, Default)]
struct Seen {
    /// (hour since the epoch, version) -> requests.
    hours: BTreeMap<(u64, String), u64>,
    last: Option<SystemTime>,
}

pub struct Clients {
    keys: Vec<(String, Arc<[u8]>)>,
    key_header: String,
    consumer_header: String,
    declared: Vec<String>,
    seen: Mutex<HashMap<(String, String), Seen>>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Clients").field("keys", &names).field("declared", &self.declared).finish()
    }
}

impl Clients {
    pub fn from_config(cfg: &ClientsConfig) -> Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(f) = &cfg.keys_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read clients.keys_file {}: {e}", f.display()))?;
            let file: KeysFile = crate::api::secrets::parse_toml(&text, "[[keys]] tables with name and key")
                .map_err(|e| format!("clients.keys_file {}: {e}", f.display()))?;
            for k in file.keys {
                if k.name.is_empty() || k.key.trim().is_empty() {
                    return Err(format!("clients.keys_file: key '{}' needs a name and a key", k.name));
                }
                keys.push((k.name, Arc::from(k.key.trim().as_bytes())));
            }
            if keys.is_empty() {
                return Err("clients.keys_file lists no keys: every inference call would be refused".into());
            }
        }
        let mut declared = cfg.consumers.clone();
        declared.extend(keys.iter().map(|(n, _)| n.clone()));
        declared.sort();
        declared.dedup();
        Ok(Self {
            keys,
            key_header: cfg.key_header.to_ascii_lowercase(),
            consumer_header: cfg.consumer_header.to_ascii_lowercase(),
            declared,
            seen: Mutex::default(),
        })
    }

    /// Whether anything here is on: keys required, or consumers declared. Off, the request path skips it all.
    pub fn is_on(&self) -> bool {
        !self.declared.is_empty()
    }

    /// Checks the call's key when keys are required, and names its consumer. `refused` counts refusals.
    pub fn identify(&self, headers: &HeaderMap, metrics: &Metrics, protocol: &str) -> Result<String, GatewayError> {
        if !self.keys.is_empty() {
            let raw = headers.get(self.key_header.as_str()).and_then(|v| v.to_str().ok());
            let given = if self.key_header == "authorization" {
                raw.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim)
            } else {
                raw.map(str::trim)
            };
            let found = given.and_then(|g| crate::api::secrets::find(g.as_bytes(), &self.keys, |(_, key)| key));
            return match found {
                Some((name, _)) => Ok(name.clone()),
                None => {
                    metrics.inference_unauthenticated(protocol, if given.is_some() { "wrong" } else { "missing" });
                    let how = if self.key_header == "authorization" {
                        "'Authorization: Bearer <key>'".to_string()
                    } else {
                        format!("the '{}' header", self.key_header)
                    };
                    Err(GatewayError::Unauthorized(format!(
                        "{} API key: inference calls need one in {how}",
                        if given.is_some() { "invalid" } else { "missing" }
                    )))
                }
            };
        }
        let named = headers.get(self.consumer_header.as_str()).and_then(|v| v.to_str().ok()).map(str::trim);
        Ok(match named {
            Some(n) if self.declared.iter().any(|d| d == n) => n.to_string(),
            _ => OTHER.to_string(),
        })
    }

    /// Counts an answered request of `consumer` on `model` version `version`.
    pub fn record(&self, metrics: &Metrics, model: &str, version: &str, consumer: &str) {
        metrics.consumer_request(model, version, consumer);
        let now = SystemTime::now();
        let hour = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() / 3600;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let s = seen.entry((model.to_string(), consumer.to_string())).or_default();
        *s.hours.entry((hour, version.to_string())).or_default() += 1;
        // Older than a day: dropped as new hours come in, so the map stays at most 25 hours per version.
        s.hours.retain(|(h, _), _| hour.saturating_sub(*h) <= 24);
        s.last = Some(now);
    }

    /// Who called `model` in the last day, most recent first.
    pub fn seen(&self, model: &str) -> Vec<ConsumerSeen> {
        let now = SystemTime::now();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(SystemTime, ConsumerSeen)> = seen
            .iter()
            .filter(|((m, _), s)| m == model && s.last.is_some_and(|t| now.duration_since(t).unwrap_or_default() < DAY))
            .map(|((_, consumer), s)| {
                let mut versions = BTreeMap::new();
                for ((_, v), n) in &s.hours {
                    *versions.entry(v.clone()).or_default() += n;
                }
                let last = s.last.unwrap_or(now);
                (last, ConsumerSeen { consumer: consumer.clone(), versions, last_seen: crate::clock::rfc3339(last) })
            })
            .collect();
        out.sort_by_key(|(last, _)| std::cmp::Reverse(*last));
        out.into_iter().map(|(_, c)| c).collect()
    }
}
