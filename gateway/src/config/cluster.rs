//! `[cluster]`: the etcd endpoints, key prefix, replica name and lease of cluster mode, checked with the rest of
//! the config before any port is bound.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[cluster]`: with no endpoints the gateway runs alone (single-node mode, the default).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:2379`, or `https://` with `tls`); empty means single-node mode.
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet, so several fleets can share one etcd.
    pub prefix: String,
    /// This replica's name; default: the host name.
    pub replica: Option<String>,
    /// Lease of this replica's membership and leadership: a dead replica's keys vanish this long after it died.
    pub lease_ttl_secs: u64,
    /// How often each replica publishes its evidence (per-version counters) for the analysing leader.
    pub evidence_interval_ms: u64,
    /// etcd user (optional), with its password read from `password_file` (never from the config itself).
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// TLS to etcd (with `https://` endpoints): the CA that signed etcd's certificate, and a client certificate
    /// when etcd requires one (`--client-cert-auth`). Replicas also call each other's HTTP port with it when
    /// `server.tls` is on (delayed labels reach the replica that answered).
    pub tls: crate::tls::ClientTls,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/gateway".into(),
            replica: None,
            lease_ttl_secs: 10,
            evidence_interval_ms: 2_000,
            user: None,
            password_file: None,
            tls: crate::tls::ClientTls::default(),
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password file's path is harmless; its content never reaches a log.
        f.debug_struct("ClusterConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .field("lease_ttl_secs", &self.lease_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// This replica's name: configured, else the host name.
    pub fn replica_name(&self) -> String {
        self.replica.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".into())
        })
    }

    pub(super) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled() {
            return out;
        }
        for e in &self.endpoints {
            let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(str::is_empty) {
                out.push(format!(
                    "cluster.endpoints: '{e}' must be a URL like http://127.0.0.1:2379 or https://etcd-0:2379"
                ));
            }
        }
        let tls = self.endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if tls != 0 && tls != self.endpoints.len() {
            out.push("cluster.endpoints: use https:// for every endpoint or for none".into());
        }
        out.extend(self.tls.check("cluster.tls"));
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 || self.prefix.ends_with('/') {
            out.push(format!("cluster.prefix = '{}' must start with / and not end with one", self.prefix));
        }
        let name = self.replica_name();
        if name.is_empty()
            || name.len() > 253
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            out.push(format!("cluster.replica = '{name}' must be letters, digits, '-', '_' or '.'"));
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            out.push(format!("cluster.lease_ttl_secs = {} must be from 2 to 3600", self.lease_ttl_secs));
        }
        if !(100..=60_000).contains(&self.evidence_interval_ms) {
            out.push(format!("cluster.evidence_interval_ms = {} must be from 100 to 60000", self.evidence_interval_ms));
        }
        if let Some(p) = &self.password_file
            && !p.is_file()
        {
            out.push(format!("cluster.password_file '{}' is not a readable file", p.display()));
        }
        if self.password_file.is_some() != self.user.is_some() {
            out.push("cluster.user and cluster.password_file go together".into());
        }
        out
    }
}
