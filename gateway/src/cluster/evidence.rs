//! Evidence for the analysis from every replica. Each replica publishes, under its lease, its cumulative counters
//! for each active rollout (outcomes, latency buckets, invalid values, mirrored pairs, delayed-label quality,
//! drift rows). The leader reads them all and keeps, per replica, the last one it saw: what a replica added since
//! is its share of the interval, and a counter that went backwards (a restarted replica, told apart by its
//! process instance) counts from zero, never as a negative. The running total is the cumulative sample the
//! single-node analysis already works on, so the analysis itself is the same code.
//!
//! The analysis waits (neither a pass nor a failure) while any live replica has not applied the model's current
//! spec revision or has not reported recently, so no interval mixes two weights or misses a replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::rollout::analysis::{Drift, Evidence, Sample};
use crate::rollout::machine::Rollout;
use crate::rollout::stats::{PairStats, Quality, StatsSnapshot};

/// Latency buckets travel too (the snapshot's own serialization leaves them out of journal events).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StatsWire {
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    shed: u64,
    rows: u64,
    latency: Vec<u64>,
}

impl From<&StatsSnapshot> for StatsWire {
    fn from(s: &StatsSnapshot) -> Self {
        Self {
            ok: s.ok,
            client_errors: s.client_errors,
            server_errors: s.server_errors,
            shed: s.shed,
            rows: s.rows,
            latency: s.latency.clone(),
        }
    }
}

impl From<StatsWire> for StatsSnapshot {
    fn from(w: StatsWire) -> Self {
        let mut s = StatsSnapshot {
            ok: w.ok,
            client_errors: w.client_errors,
            server_errors: w.server_errors,
            shed: w.shed,
            rows: w.rows,
            ..Default::default()
        };
        for (a, b) in s.latency.iter_mut().zip(w.latency) {
            *a = b;
        }
        s
    }
}

/// One replica's report (`evidence/<m>/<replica>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    instance: String,
    /// The rollout it measures (`started_at`) and the spec revision the replica had applied.
    rollout: String,
    revision: i64,
    at_ms: u64,
    canary: StatsWire,
    stable: StatsWire,
    canary_invalid: u64,
    pairs: PairStats,
    canary_quality: Quality,
    stable_quality: Quality,
    drift_rows: Option<u64>,
    max_psi: Option<f64>,
    features: usize,
}

impl Report {
    fn sample(&self) -> Sample {
        Sample {
            canary: self.canary.clone().into(),
            stable: self.stable.clone().into(),
            canary_invalid: self.canary_invalid,
            pairs: self.pairs.clone(),
            canary_quality: self.canary_quality.clone(),
            stable_quality: self.stable_quality.clone(),
        }
    }

    fn drift(&self) -> Drift {
        Drift { rows: self.drift_rows, max_psi: self.max_psi, features: self.features }
    }
}

/// The leader's running sum for one rollout.
#[derive(Debug, Default)]
pub struct Accum {
    rollout: String,
    /// Per replica: the process instance and the last sample seen from it.
    last: HashMap<String, (String, Sample)>,
    total: Sample,
}

impl Accum {
    /// Adds what `replica` reported since its last report; its first report is the baseline (what it counted
    /// before this leader was watching belongs to no interval of its).
    fn add(&mut self, replica: &str, instance: &str, now: Sample) {
        let delta = match self.last.get(replica) {
            None => None,
            Some((inst, _)) if inst != instance => Some(now.clone()),
            Some((_, before)) => Some(now.since_or_reset(before)),
        };
        if let Some(d) = delta {
            self.total.add(&d);
        }
        self.last.insert(replica.to_string(), (instance.to_string(), now));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Cluster {
    fn evidence_key(&self, model: &str, replica: &str) -> String {
        self.key(&format!("evidence/{model}/{replica}"))
    }

    /// Publishes this replica's counters for every active rollout, every `evidence_interval`.
    pub(super) async fn publish_evidence(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.evidence_interval).await;
            let lease = self.lease.load(Ordering::Relaxed);
            if lease == 0 {
                continue;
            }
            for slot in self.core.registry.models() {
                let Some(r) = slot.control().rollout.clone().filter(|r| r.phase.is_active()) else { continue };
                let Ok((sample, drift)) = self.core.sample(&slot.name, r.canary, r.stable) else { continue };
                let report = Report {
                    instance: self.instance.clone(),
                    rollout: r.started_at.clone(),
                    revision: self.applied_revision(),
                    at_ms: now_ms(),
                    canary: (&sample.canary).into(),
                    stable: (&sample.stable).into(),
                    canary_invalid: sample.canary_invalid,
                    pairs: sample.pairs,
                    canary_quality: sample.canary_quality,
                    stable_quality: sample.stable_quality,
                    drift_rows: drift.rows,
                    max_psi: drift.max_psi,
                    features: drift.features,
                };
                let value = serde_json::to_vec(&report).unwrap_or_default();
                let key = self.evidence_key(&slot.name, &self.replica);
                let mut client = self.client.clone();
                let put = client.put(key, value, Some(PutOptions::new().with_lease(lease)));
                match tokio::time::timeout(Duration::from_secs(2), put).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "cannot publish evidence"),
                    Err(_) => tracing::debug!("cannot publish evidence: no answer within 2 s"),
                }
            }
        }
    }

    /// The fleet's cumulative sample for `r` (the leader calls it on every analysis), or why it must wait.
    pub fn summed_sample(&self, model: &str, r: &Rollout) -> Result<Evidence, String> {
        let read = async {
            let members = self.members().await?;
            let opts = GetOptions::new().with_prefix();
            let resp = self.client.clone().get(self.key(&format!("evidence/{model}/")), Some(opts)).await?;
            let reports: HashMap<String, Report> = resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let replica = key.rsplit('/').next()?.to_string();
                    Some((replica, serde_json::from_slice(kv.value()).ok()?))
                })
                .collect();
            Ok::<_, etcd_client::Error>((members, reports))
        };
        let (members, reports) = match self.rt.block_on(async { tokio::time::timeout(super::CALL_TIMEOUT, read).await })
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Ok(Evidence::Wait(format!("the cluster store is out of reach: {e}"))),
            Err(_) => return Ok(Evidence::Wait("the cluster store did not answer within 3 s".into())),
        };
        let spec = self.revision_of(model);
        let fresh = self.evidence_interval.as_millis() as u64 * 3 + 1000;
        for m in &members {
            if m.applied_revision < spec {
                return Ok(Evidence::Wait(format!(
                    "replica {} has applied revision {}, the model's spec is at {spec}",
                    m.name, m.applied_revision
                )));
            }
            match reports.get(&m.name) {
                Some(rep) if rep.rollout == r.started_at && now_ms().saturating_sub(rep.at_ms) <= fresh => {}
                _ => return Ok(Evidence::Wait(format!("no recent evidence from replica {} for this rollout", m.name))),
            }
        }
        if members.is_empty() {
            return Ok(Evidence::Wait("no live replica is registered".into()));
        }
        let mut accum = self.accum.lock().unwrap_or_else(|p| p.into_inner());
        let a = accum.entry(model.to_string()).or_default();
        if a.rollout != r.started_at {
            *a = Accum { rollout: r.started_at.clone(), ..Default::default() };
        }
        let mut drift: Option<Drift> = None;
        for m in &members {
            let rep = &reports[&m.name];
            a.add(&m.name, &rep.instance, rep.sample());
            match drift.as_mut() {
                Some(d) => d.combine(&rep.drift()),
                None => drift = Some(rep.drift()),
            }
        }
        Ok(Evidence::Ready(Box::new(a.total.clone()), drift.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ok: u64) -> Sample {
        let mut s = Sample::default();
        s.canary.ok = ok;
        s.stable.ok = ok * 2;
        s
    }

    /// A replica's first report is its baseline, later ones add what is new, and a restart (a new instance, or
    /// counters going backwards) counts from zero, never negative.
    #[test]
    fn the_sum_never_goes_backwards() {
        let mut a = Accum::default();
        a.add("r1", "i1", sample(100));
        a.add("r2", "j1", sample(50));
        assert_eq!(a.total.canary.ok, 0, "baselines");
        a.add("r1", "i1", sample(110));
        a.add("r2", "j1", sample(55));
        assert_eq!((a.total.canary.ok, a.total.stable.ok), (15, 30));
        a.add("r2", "j2", sample(3)); // r2 restarted
        assert_eq!(a.total.canary.ok, 18);
        a.add("r1", "i1", sample(5)); // same instance, counters lower: treated as a reset too
        assert_eq!(a.total.canary.ok, 23);
        a.add("r1", "i1", sample(7));
        assert_eq!(a.total.canary.ok, 25);
    }

    #[test]
    fn reports_carry_latency_buckets() {
        let mut s = StatsSnapshot::default();
        s.latency[3] = 7;
        let back: StatsSnapshot = StatsWire::from(&s).into();
        assert_eq!(back.latency[3], 7);
    }
}
