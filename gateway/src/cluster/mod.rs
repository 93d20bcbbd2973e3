//! Cluster mode: replicas share one desired state and one rollout analyser through etcd. Single-node mode (no
//! `cluster.endpoints`) never builds this.
//!
//! Keys under `cluster.prefix`:
//! - `models/<m>/spec`: each model's desired state (routing, rollout, journal) as JSON. Every replica watches
//!   the prefix, resuming from the last revision it applied, and applies changes through the same `ArcSwap` swap
//!   as a local change, so the request path never touches etcd. A change from any replica is a transaction
//!   guarded by the spec's revision as that replica last saw it: of two racing operators one wins, the other
//!   gets 409. The state file stays a local cache for starts without etcd.
//! - `replicas/<name>` under this replica's lease: its addresses and the spec revision it has applied.
//! - `leader`: etcd's election, one for all models. Only the leader ticks the rollout controller, and each of
//!   its decisions is written in a transaction that also requires its leader key (same create revision), so a
//!   deposed leader cannot write: that is the fence, not a clock.
//! - `evidence/<m>/<name>` under the lease: each replica's cumulative counters for the model's rollout
//!   ([`evidence`]); the leader sums them for the analysis.
//!
//! When etcd is out of reach, serving goes on with the last applied state, changes are refused (503 naming the
//! store), and the analysis waits; on reconnection the watch catches up from its last revision.

pub mod evidence;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::core::Core;
use crate::error::GatewayError;
use crate::model::registry::SharedStore;
use crate::state::ModelState;

/// Deadline for one call to etcd on an operator's or the controller's behalf.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of one attempt within a call: a request stuck on a dead member is abandoned and sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The addresses a replica advertises.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Addrs {
    pub http_addr: String,
    pub grpc_addr: String,
    pub admin_addr: String,
}

/// A replica's membership record (`replicas/<name>`), refreshed every third of the lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    #[serde(flatten)]
    pub addrs: Addrs,
    /// The highest spec revision this replica has applied.
    pub applied_revision: i64,
    /// RFC 3339.
    pub last_seen: String,
}

pub struct Cluster {
    client: Client,
    prefix: String,
    replica: String,
    /// Random per process: evidence from a restarted replica is told apart from a counter going backwards.
    instance: String,
    addrs: Mutex<Addrs>,
    rt: tokio::runtime::Handle,
    lease_ttl: i64,
    evidence_interval: Duration,
    /// This replica's lease (0 when it has none).
    lease: AtomicI64,
    /// The leader key and its create revision while this replica leads.
    leader: Mutex<Option<(Vec<u8>, i64)>>,
    connected: AtomicBool,
    /// Per model, the spec revision this replica last applied or wrote.
    revisions: Mutex<HashMap<String, i64>>,
    applied: AtomicI64,
    core: Arc<Core>,
    accum: Mutex<HashMap<String, evidence::Accum>>,
    /// For handing delayed labels to the replica that answered: over HTTPS (`cluster.tls`) when the fleet's
    /// HTTP port has TLS.
    http: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<bytes::Bytes>,
    >,
    peer_scheme: &'static str,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({} at {})", self.replica, self.prefix)
    }
}

fn unreachable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::StoreUnavailable(format!("the cluster store (etcd) is out of reach: {e}; nothing was changed"))
}

impl Cluster {
    /// Connects to etcd, reads every model's shared state and hands it to the registry (over the local state
    /// file's), so the repository loads with the fleet's routing. If etcd is out of reach, the replica serves its
    /// last known state (the state file) and says so; it catches up when etcd answers.
    /// `peers_tls`: the replicas' HTTP ports have TLS (`server.tls`), so replicas call each other over HTTPS.
    pub async fn start(cfg: &ClusterConfig, peers_tls: bool, core: Arc<Core>) -> anyhow::Result<Arc<Self>> {
        let tls = crate::tls::ClientTlsMaterial::load(&cfg.tls).map_err(|e| anyhow::anyhow!("cluster.tls: {e}"))?;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(file)) = (&cfg.user, &cfg.password_file) {
            let password = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read cluster.password_file {}: {e}", file.display()))?;
            options = options.with_user(user.clone(), password.trim().to_string());
        }
        if cfg.endpoints.iter().all(|e| e.starts_with("https://")) {
            options = options.with_tls(tls.tonic(None));
        }
        let client = Client::connect(&cfg.endpoints, Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("cannot use cluster.endpoints {:?}: {e}", cfg.endpoints))?;
        let cluster = Arc::new(Self {
            client,
            prefix: cfg.prefix.clone(),
            replica: cfg.replica_name(),
            instance: format!("{:016x}", fastrand::u64(..)),
            addrs: Mutex::default(),
            rt: tokio::runtime::Handle::current(),
            lease_ttl: cfg.lease_ttl_secs as i64,
            evidence_interval: Duration::from_millis(cfg.evidence_interval_ms),
            lease: AtomicI64::new(0),
            leader: Mutex::new(None),
            connected: AtomicBool::new(false),
            revisions: Mutex::default(),
            applied: AtomicI64::new(0),
            core,
            accum: Mutex::default(),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls.rustls())
                    .https_or_http()
                    .enable_http1()
                    .build(),
            ),
            peer_scheme: if peers_tls { "https" } else { "http" },
        });
        let states = match tokio::time::timeout(CALL_TIMEOUT, cluster.read_models()).await {
            Ok(Ok(states)) => {
                cluster.connected.store(true, Ordering::Relaxed);
                tracing::info!(replica = %cluster.replica, models = states.len(), "cluster state read from etcd");
                states
            }
            Ok(Err(e)) => {
                cluster.disconnected(&format!("{e}"));
                BTreeMap::new()
            }
            Err(_) => {
                cluster.disconnected("no answer within 3 s");
                BTreeMap::new()
            }
        };
        cluster.core.registry.share(cluster.clone(), states);
        cluster.core.metrics.cluster_enabled();
        cluster.core.metrics.cluster_connected(cluster.is_connected());
        Ok(cluster)
    }

    fn disconnected(&self, why: &str) {
        self.connected.store(false, Ordering::Relaxed);
        let note = format!("cluster store unreachable ({why}); serving the last known routing");
        tracing::warn!(replica = %self.replica, "{note}");
        self.core.set_ready_note(Some(note));
    }

    fn connected_again(&self) {
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(replica = %self.replica, "cluster store reachable again");
            self.core.set_ready_note(None);
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// The highest spec revision this replica has applied.
    pub fn applied_revision(&self) -> i64 {
        self.applied.load(Ordering::Relaxed)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn spec_key(&self, model: &str) -> String {
        self.key(&format!("models/{model}/spec"))
    }

    fn model_of(&self, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.key("models/"))?;
        rest.strip_suffix("/spec").filter(|m| !m.contains('/')).map(str::to_string)
    }

    fn revision_of(&self, model: &str) -> i64 {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner()).get(model).copied().unwrap_or(0)
    }

    fn note_revision(&self, model: &str, revision: i64) {
        self.revisions.lock().unwrap_or_else(|p| p.into_inner()).insert(model.to_string(), revision);
        self.applied.fetch_max(revision, Ordering::Relaxed);
        self.core.metrics.cluster_revision(self.applied_revision());
        self.core.metrics.cluster_spec_revision(model, revision);
    }

    /// Every model's shared state, checked like a restored state file; remembers each one's revision.
    async fn read_models(&self) -> Result<BTreeMap<String, ModelState>, etcd_client::Error> {
        let resp = self.client.clone().get(self.key("models/"), Some(GetOptions::new().with_prefix())).await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let Some(model) = self.model_of(kv.key()) else { continue };
            match parse_state(&model, kv.value()) {
                Ok(state) => {
                    self.note_revision(&model, kv.mod_revision());
                    out.insert(model, state);
                }
                Err(e) => tracing::error!(model, error = %e, "ignoring an invalid shared state"),
            }
        }
        if let Some(h) = resp.header() {
            self.applied.fetch_max(h.revision(), Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Starts the background tasks: the session (lease, membership, election), the watch, publishing models the
    /// store does not have yet, and the evidence. They end with `stop`.
    pub fn spawn(self: &Arc<Self>, addrs: Addrs, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        *self.addrs.lock().unwrap_or_else(|p| p.into_inner()) = addrs;
        let tasks = [
            tokio::spawn(self.clone().session()),
            tokio::spawn(self.clone().watch()),
            tokio::spawn(self.clone().publish_missing()),
            tokio::spawn(self.clone().publish_evidence()),
        ];
        let this = self.clone();
        tokio::spawn(async move {
            stop.await;
            for t in &tasks {
                t.abort();
            }
            // Leave at once rather than a lease later: another replica takes over the analysis now.
            let lease = this.lease.swap(0, Ordering::Relaxed);
            if lease != 0 {
                let _ = tokio::time::timeout(Duration::from_secs(1), this.client.clone().lease_revoke(lease)).await;
            }
        });
    }

    /// Keeps a lease, the membership record and a campaign for leadership; starts over when the lease is lost.
    async fn session(self: Arc<Self>) {
        loop {
            let lease = match self.client.clone().lease_grant(self.lease_ttl, None).await {
                Ok(r) => r.id(),
                Err(e) => {
                    self.disconnected(&e.to_string());
                    self.core.metrics.cluster_connected(false);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.connected_again();
            self.lease.store(lease, Ordering::Relaxed);
            let campaign = tokio::spawn(self.clone().campaign(lease));
            self.heartbeat(lease).await;
            campaign.abort();
            *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = None;
            self.lease.store(0, Ordering::Relaxed);
            tracing::warn!(replica = %self.replica, "cluster lease lost; rejoining");
        }
    }

    /// Waits to be elected; then this replica leads until its lease goes.
    async fn campaign(self: Arc<Self>, lease: i64) {
        loop {
            match self.client.clone().campaign(self.key("leader"), self.replica.clone(), lease).await {
                Ok(r) => {
                    if let Some(k) = r.leader() {
                        tracing::info!(replica = %self.replica, "elected to lead the rollout analysis");
                        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some((k.key().to_vec(), k.rev()));
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Renews the lease and the membership record every third of the lease; returns when the lease is gone.
    async fn heartbeat(&self, lease: i64) {
        let every = Duration::from_millis((self.lease_ttl as u64 * 1000 / 3).max(200));
        let mut last_ok = tokio::time::Instant::now();
        let ttl = Duration::from_secs(self.lease_ttl as u64);
        let mut keeper = None;
        loop {
            if keeper.is_none() {
                keeper = self.client.clone().lease_keep_alive(lease).await.ok();
            }
            let renewed = match keeper.as_mut() {
                Some((k, s)) => match k.keep_alive().await {
                    Ok(()) => matches!(s.message().await, Ok(Some(r)) if r.ttl() > 0),
                    Err(_) => false,
                },
                None => false,
            };
            if renewed {
                last_ok = tokio::time::Instant::now();
                self.connected_again();
                let _ = self.register(lease).await;
                self.refresh_metrics().await;
            } else {
                keeper = None;
                self.disconnected("the lease could not be renewed");
                if last_ok.elapsed() >= ttl {
                    return;
                }
            }
            self.core.metrics.cluster_connected(self.is_connected());
            tokio::time::sleep(if renewed { every } else { Duration::from_millis(300) }).await;
        }
    }

    async fn register(&self, lease: i64) -> Result<(), etcd_client::Error> {
        let member = Member {
            name: self.replica.clone(),
            addrs: self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            applied_revision: self.applied_revision(),
            last_seen: crate::clock::now_rfc3339(),
        };
        let value = serde_json::to_vec(&member).unwrap_or_default();
        let opts = PutOptions::new().with_lease(lease);
        self.client.clone().put(self.key(&format!("replicas/{}", self.replica)), value, Some(opts)).await.map(drop)
    }

    async fn refresh_metrics(&self) {
        if let Ok(members) = self.members().await {
            self.core.metrics.cluster_replicas(members.len());
        }
        let leads = self.is_leader();
        for slot in self.core.registry.models() {
            self.core.metrics.cluster_leader(&slot.name, leads);
        }
    }

    /// The live replicas (those whose lease holds).
    pub async fn members(&self) -> Result<Vec<Member>, etcd_client::Error> {
        let resp = self.client.clone().get(self.key("replicas/"), Some(GetOptions::new().with_prefix())).await?;
        Ok(resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    /// The replica leading the analysis, if any.
    pub async fn leader_name(&self) -> Option<String> {
        let r = self.client.clone().leader(self.key("leader")).await.ok()?;
        r.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    /// Follows every model's spec from the last applied revision; on a compacted history, reads them afresh.
    async fn watch(self: Arc<Self>) {
        loop {
            let from = self.applied_revision() + 1;
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let mut stream = match self.client.clone().watch(self.key("models/"), Some(opts)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the cluster store; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Ok(Some(resp)) = stream.message().await {
                if resp.canceled() {
                    if resp.compact_revision() > 0
                        && let Ok(states) = self.read_models().await
                    {
                        for (m, s) in states {
                            self.core.registry.apply_shared(&m, s);
                        }
                    }
                    break;
                }
                for ev in resp.events() {
                    if ev.event_type() == EventType::Put
                        && let Some(kv) = ev.kv()
                    {
                        self.apply(kv.key(), kv.value(), kv.mod_revision());
                    }
                }
                // Every model event up to the response's revision has been delivered.
                if let Some(h) = resp.header() {
                    self.applied.fetch_max(h.revision(), Ordering::Relaxed);
                    self.core.metrics.cluster_revision(self.applied_revision());
                }
                // Tell the leader at once, so a window waiting for every replica opens without delay.
                let lease = self.lease.load(Ordering::Relaxed);
                if lease != 0 && !resp.events().is_empty() {
                    let _ = self.register(lease).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn apply(&self, key: &[u8], value: &[u8], revision: i64) {
        let Some(model) = self.model_of(key) else { return };
        if revision <= self.revision_of(&model) {
            return; // already applied (this replica's own write, or a replay)
        }
        match parse_state(&model, value) {
            Ok(state) => {
                self.core.registry.apply_shared(&model, state);
                self.note_revision(&model, revision);
            }
            Err(e) => tracing::error!(model, revision, error = %e, "ignoring an invalid shared state"),
        }
    }

    /// After the first load: models this replica has and the store does not (a new fleet, a new model) are
    /// written, unless another replica wrote them first.
    async fn publish_missing(self: Arc<Self>) {
        while !self.core.registry.initial_load_done() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            let states = self.core.registry.states();
            let missing: Vec<_> = states.into_iter().filter(|(m, _)| self.revision_of(m) == 0).collect();
            let mut pending = false;
            for (model, state) in missing {
                let this = self.clone();
                let r = tokio::task::spawn_blocking(move || this.commit(&model, &state, false)).await;
                pending |= matches!(r, Ok(Err(GatewayError::StoreUnavailable(_))));
            }
            if !pending {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Hands a delayed label this replica cannot join to the other live replicas, one after the other, until one
    /// remembers the answer (anything but 404). Returns that replica's status and body.
    pub async fn forward_feedback(&self, model: &str, body: bytes::Bytes, header: &str) -> Option<(u16, bytes::Bytes)> {
        use http_body_util::{BodyExt, Full};
        let members = self.members().await.ok()?;
        for m in members.into_iter().filter(|m| m.name != self.replica) {
            let req =
                http::Request::post(format!("{}://{}/v2/models/{model}/feedback", self.peer_scheme, m.addrs.http_addr))
                    .header(header, self.replica.as_str())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                    .ok()?;
            let Ok(Ok(resp)) = tokio::time::timeout(CALL_TIMEOUT, self.http.request(req)).await else { continue };
            let status = resp.status().as_u16();
            let Ok(bytes) = http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await else { continue };
            if status != 404 {
                return Some((status, bytes.to_bytes()));
            }
        }
        None
    }

    /// `GET /admin/cluster`.
    pub async fn view(&self) -> serde_json::Value {
        let members = self.members().await;
        let leader = self.leader_name().await;
        let models: Vec<String> = self.core.registry.models().iter().map(|s| s.name.to_string()).collect();
        let leaders: BTreeMap<String, Option<String>> = models.iter().map(|m| (m.clone(), leader.clone())).collect();
        serde_json::json!({
            "replica": self.replica,
            "connected": members.is_ok() && self.is_connected(),
            "revision": self.applied_revision(),
            "leader": leader,
            "leading": self.is_leader(),
            "replicas": members.unwrap_or_default(),
            "leaders": leaders,
            "prefix": self.prefix,
        })
    }

    /// Runs an etcd call from a blocking thread (the admin and controller paths), trying again on a fresh
    /// request when one fails or hangs (a member of a three-member etcd just died, say), within one deadline.
    fn call<T, F>(&self, f: impl Fn(Client) -> F) -> Result<T, GatewayError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + 2 * CALL_TIMEOUT;
            let mut last = String::from("no answer");
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(ATTEMPT_TIMEOUT, f(self.client.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = format!("no answer within {} ms", ATTEMPT_TIMEOUT.as_millis()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(unreachable(last))
        })
    }
}

/// A model's state from the store, checked like a restored state file.
fn parse_state(model: &str, bytes: &[u8]) -> Result<ModelState, String> {
    let state: ModelState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let problems = state.problems(model);
    if problems.is_empty() { Ok(state) } else { Err(problems.join("; ")) }
}

impl SharedStore for Cluster {
    fn commit(&self, model: &str, state: &ModelState, fenced: bool) -> Result<(), GatewayError> {
        let key = self.spec_key(model);
        let seen = self.revision_of(model);
        let mut when = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, seen)];
        if fenced {
            let leader = self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some((leader_key, rev)) = leader else {
                return Err(GatewayError::Conflict(format!(
                    "replica {} no longer leads the rollout analysis; the decision was not written",
                    self.replica
                )));
            };
            when.push(Compare::create_revision(leader_key, CompareOp::Equal, rev));
        }
        let value = serde_json::to_vec(state).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::put(key.clone(), value.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        if resp.succeeded() {
            if let Some(h) = resp.header() {
                self.note_revision(model, h.revision());
            }
            return Ok(());
        }
        // A retried transaction whose first attempt landed fails its compare against itself: the store then
        // holds exactly this change, which is a success, not a conflict.
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
                && kv.value() == value.as_slice()
            {
                self.note_revision(model, kv.mod_revision());
                return Ok(());
            }
        }
        Err(GatewayError::Conflict(if fenced {
            format!(
                "the rollout decision for '{model}' was not written: this replica no longer leads, or the model changed"
            )
        } else {
            format!(
                "model '{model}' was changed on another replica meanwhile (this replica had applied revision {seen}); \
                 nothing was changed: read it again and retry"
            )
        }))
    }
}
