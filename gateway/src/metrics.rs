//! Prometheus metric families, one registry per gateway instance (tests run several in one process). Hot-path
//! handles for a version are resolved once, when the version loads, so a request touches atomics only and never
//! the label map's lock.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::time::Duration;

use crate::skew::drift::DriftSnapshot;

/// Request latency buckets: sub-millisecond resolution where the budget lives, up to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.008, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Label value for requests that name a model the gateway does not have: client-chosen names never become labels.
pub const UNKNOWN_MODEL: &str = "_unknown";

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    inference_duration: HistogramVec,
    batch_rows: HistogramVec,
    pub queue_depth: IntGauge,
    pub queue_rejections: IntCounter,
    pub in_flight: IntGauge,
    model_ready: IntGaugeVec,
    stable: IntGaugeVec,
    canary_weight: GaugeVec,
    promotions: IntCounterVec,
    rollbacks: IntCounterVec,
    invalid_values: IntCounterVec,
    feature_psi: GaugeVec,
    feature_out_of_range: GaugeVec,
    psi_max: GaugeVec,
    window_rows: IntGaugeVec,
    model_age: GaugeVec,
    model_stale: IntGaugeVec,
    mirror_dropped: IntCounterVec,
    mirror_pairs: IntCounterVec,
    label_compared: IntCounterVec,
    label_disagreed: IntCounterVec,
    divergence_abs: HistogramVec,
    divergence_rel: HistogramVec,
    pub capture_written: IntCounter,
    pub capture_dropped: IntCounter,
    feedback: IntCounterVec,
    rollout_phase: IntGaugeVec,
    rollout_failed: IntGaugeVec,
    rollout_step: IntGaugeVec,
    rollout_decisions: IntCounterVec,
    rollout_check: GaugeVec,
    upstream_up: IntGaugeVec,
    connections_open: IntGaugeVec,
    connections_refused: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_reloads: IntCounterVec,
    tls_expiry: IntGaugeVec,
    files_changed: IntGaugeVec,
    load_failed: IntGaugeVec,
    consumer_requests: IntCounterVec,
    unauthenticated: IntCounterVec,
    training_accuracy: GaugeVec,
    cluster_enabled: IntGauge,
    cluster_spec_revision: IntGaugeVec,
    cluster_connected: IntGauge,
    cluster_replicas: IntGauge,
    cluster_leader: IntGaugeVec,
    cluster_revision: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One TLS listener's metrics.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    pub handshake_failures: IntCounter,
    pub reloaded: IntCounter,
    pub refused: IntCounter,
    pub expiry: IntGauge,
}

/// Per-version handles used on every request.
#[derive(Clone)]
pub struct VersionMetrics {
    pub http_ok: IntCounter,
    pub http_duration: Histogram,
    pub grpc_ok: IntCounter,
    pub grpc_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_rows: Histogram,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by the first test run.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

/// Creates metric families and registers each one as it is made, so a family is named in one place only.
struct Families {
    registry: Registry,
}

impl Families {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: prometheus::Result<C>) -> C {
        let c = must(c);
        must(self.registry.register(Box::new(c.clone())));
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauges(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let f = Families { registry: Registry::new() };
        let mv = ["model", "version"];
        let pair = ["model", "version", "shadow_version"];
        let diff_buckets = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];
        let rows_buckets = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
        let metrics = Self {
            requests: f.counters(
                "gateway_requests_total",
                "Inference requests answered, by model, version, protocol and status code.",
                &["model", "version", "protocol", "code"],
            ),
            request_duration: f.histograms(
                "gateway_request_duration_seconds",
                "Time from a request's arrival to its response being ready, by model, version and protocol.",
                LATENCY_BUCKETS,
                &["model", "version", "protocol"],
            ),
            inference_duration: f.histograms(
                "gateway_inference_duration_seconds",
                "Time inside the model backend per call.",
                LATENCY_BUCKETS,
                &mv,
            ),
            batch_rows: f.histograms(
                "gateway_batch_rows",
                "Rows per backend call (more than a request's when batched).",
                &rows_buckets,
                &mv,
            ),
            queue_depth: f.gauge("gateway_inference_queue_depth", "Calls waiting for an inference worker."),
            queue_rejections: f.counter(
                "gateway_inference_queue_rejections_total",
                "Calls refused because the inference queue was full.",
            ),
            in_flight: f.gauge("gateway_requests_in_flight", "Inference requests received and not yet answered."),
            model_ready: f.gauges(
                "gateway_model_ready",
                "1 if the version passed its load and golden-example gate, else 0.",
                &mv,
            ),
            stable: f.gauges("gateway_model_stable", "1 for the version that is stable for its model, else 0.", &mv),
            canary_weight: f.float_gauges(
                "gateway_canary_weight_percent",
                "Share of unpinned traffic sent to the canary version, percent.",
                &mv,
            ),
            promotions: f.counters("gateway_promotions_total", "Canaries promoted to stable.", &["model"]),
            rollbacks: f.counters(
                "gateway_rollbacks_total",
                "Canaries rolled back, by reason (manual or the failing check).",
                &["model", "reason"],
            ),
            invalid_values: f.counters(
                "gateway_invalid_values_total",
                "Input values that were NaN, infinite or outside the declared bounds.",
                &["model", "version", "feature", "kind"],
            ),
            feature_psi: f.float_gauges(
                "gateway_feature_psi",
                "Population stability index of a feature over the drift window vs training.",
                &["model", "version", "feature"],
            ),
            feature_out_of_range: f.float_gauges(
                "gateway_feature_out_of_range_ratio",
                "Share of a feature's values outside the training range.",
                &["model", "version", "feature"],
            ),
            psi_max: f.float_gauges(
                "gateway_feature_psi_max",
                "Highest feature PSI of a version over the drift window.",
                &mv,
            ),
            window_rows: f.gauges(
                "gateway_drift_window_rows",
                "Rows in the drift window (PSI needs at least 100).",
                &mv,
            ),
            model_age: f.float_gauges(
                "gateway_model_age_seconds",
                "Time since the version was trained (manifest trained_at).",
                &mv,
            ),
            model_stale: f.gauges(
                "gateway_model_stale",
                "1 when the version is older than skew.max_model_age_days.",
                &mv,
            ),
            mirror_dropped: f.counters(
                "gateway_mirror_dropped_total",
                "Shadow copies dropped: queue_full, busy (no idle worker), shadow_error.",
                &["reason"],
            ),
            mirror_pairs: f.counters("gateway_mirror_pairs_total", "Live/shadow answer pairs compared.", &pair),
            label_compared: f.counters(
                "gateway_mirror_labels_compared_total",
                "Class labels compared between live and shadow.",
                &pair,
            ),
            label_disagreed: f.counters(
                "gateway_mirror_label_disagreements_total",
                "Class labels on which live and shadow disagreed.",
                &pair,
            ),
            divergence_abs: f.histograms(
                "gateway_mirror_abs_diff",
                "Absolute difference of numeric outputs, live vs shadow.",
                &diff_buckets,
                &pair,
            ),
            divergence_rel: f.histograms(
                "gateway_mirror_rel_diff",
                "Relative difference of numeric outputs, live vs shadow.",
                &diff_buckets,
                &pair,
            ),
            capture_written: f.counter("gateway_capture_records_total", "Requests written to the capture log."),
            capture_dropped: f
                .counter("gateway_capture_dropped_total", "Capture records dropped because the writer was behind."),
            feedback: f.counters(
                "gateway_feedback_total",
                "Delayed labels joined, by outcome (correct, wrong, value).",
                &["model", "version", "outcome"],
            ),
            rollout_phase: f.gauges(
                "gateway_rollout_phase",
                "1 for the phase of a model's current or last rollout (progressing, paused, awaiting_approval, \
                 promoted, rolled_back, aborted), 0 for the others.",
                &["model", "phase"],
            ),
            rollout_failed: f.gauges(
                "gateway_rollout_failed_intervals",
                "Failed analyses in the current rollout.",
                &["model"],
            ),
            rollout_step: f.gauges("gateway_rollout_step", "Weight step of the current rollout, from 1.", &["model"]),
            rollout_decisions: f.counters(
                "gateway_rollout_decisions_total",
                "Rollout analyses by decision: advance, hold, failed, await_approval, promote, rollback.",
                &["model", "decision"],
            ),
            rollout_check: f.float_gauges(
                "gateway_rollout_check_value",
                "Value a rollout check measured at the last analysis (NaN without data); thresholds are in the \
                 journal.",
                &["model", "check"],
            ),
            upstream_up: f.gauges(
                "gateway_upstream_up",
                "1 while a remote version's upstream answers its readiness probe and its circuit is closed.",
                &mv,
            ),
            connections_open: f.gauges(
                "gateway_connections_open",
                "Open client connections, by listener (http, admin, metrics).",
                &["listener"],
            ),
            connections_refused: f.counters(
                "gateway_connections_refused_total",
                "Connections refused because the listener had server.max_connections open, by listener.",
                &["listener"],
            ),
            tls_handshake_failures: f.counters(
                "gateway_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out (wrong CA, missing client certificate, plain text on a TLS \
                 port), by listener.",
                &["listener"],
            ),
            tls_reloads: f.counters(
                "gateway_tls_reloads_total",
                "Certificate reloads after the files changed, by listener and result (ok, or error: the old \
                 certificate stays).",
                &["listener", "result"],
            ),
            tls_expiry: f.gauges(
                "gateway_tls_certificate_expiry_timestamp_seconds",
                "When the certificate a listener serves expires (unix time).",
                &["listener"],
            ),
            files_changed: f.gauges(
                "gateway_model_files_changed",
                "1 while a serving version's files differ from what it loaded (changed or gone), else 0.",
                &mv,
            ),
            consumer_requests: f.counters(
                "gateway_consumer_requests_total",
                "Answered inference requests per declared consumer (API key name or consumer header; else other).",
                &["model", "version", "consumer"],
            ),
            unauthenticated: f.counters(
                "gateway_inference_unauthenticated_total",
                "Inference calls refused for a missing or wrong API key, by protocol and reason.",
                &["protocol", "reason"],
            ),
            load_failed: f.gauges(
                "gateway_model_load_failed",
                "1 while the version's last load failed (it does not serve), else 0.",
                &mv,
            ),
            training_accuracy: f.float_gauges(
                "gateway_model_training_accuracy",
                "Test accuracy at training time, from the manifest's training.metrics.test_accuracy (classifiers).",
                &mv,
            ),
            cluster_enabled: f.gauge("gateway_cluster_enabled", "1 when running in cluster mode, else 0."),
            cluster_spec_revision: f.gauges(
                "gateway_cluster_spec_revision",
                "Cluster mode: the cluster store revision of the model's routing spec this replica applied.",
                &["model"],
            ),
            cluster_connected: f.gauge(
                "gateway_cluster_connected",
                "Cluster mode: 1 while this replica reaches the cluster store (etcd), else 0.",
            ),
            cluster_replicas: f.gauge("gateway_cluster_replicas", "Cluster mode: live replicas in the fleet."),
            cluster_leader: f.gauges(
                "gateway_cluster_leader",
                "Cluster mode: 1 when this replica leads the rollout analysis of the model, else 0.",
                &["model"],
            ),
            cluster_revision: f.gauge(
                "gateway_cluster_applied_revision",
                "Cluster mode: the highest spec revision of the cluster store this replica has applied.",
            ),
            registry: f.registry.clone(),
        };
        // Memory, CPU, open files and threads of this process, under the standard `process_` names.
        must(metrics.registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())));
        metrics
    }

    pub fn upstream_up(&self, model: &str, version: &str) -> IntGauge {
        let g = self.upstream_up.with_label_values(&[model, version]);
        g.set(1);
        g
    }

    /// A remote version that is gone (unloaded, or failed to load) has no upstream to report on.
    pub fn forget_upstream(&self, model: &str, version: &str) {
        let _ = self.upstream_up.remove_label_values(&[model, version]);
    }

    /// A TLS listener's counters: failed handshakes, reloads that worked, reloads refused; and its expiry gauge.
    pub fn tls(&self, listener: &str) -> TlsMetrics {
        TlsMetrics {
            handshake_failures: self.tls_handshake_failures.with_label_values(&[listener]),
            reloaded: self.tls_reloads.with_label_values(&[listener, "ok"]),
            refused: self.tls_reloads.with_label_values(&[listener, "error"]),
            expiry: self.tls_expiry.with_label_values(&[listener]),
        }
    }

    /// The open-connection gauge and the refusal counter of one listener.
    pub fn connections(&self, listener: &str) -> (IntGauge, IntCounter) {
        let refused = self.connections_refused.with_label_values(&[listener]);
        (self.connections_open.with_label_values(&[listener]), refused)
    }

    pub fn version(&self, model: &str, version: &str) -> VersionMetrics {
        VersionMetrics {
            http_ok: self.requests.with_label_values(&[model, version, "http", "200"]),
            http_duration: self.request_duration.with_label_values(&[model, version, "http"]),
            grpc_ok: self.requests.with_label_values(&[model, version, "grpc", "200"]),
            grpc_duration: self.request_duration.with_label_values(&[model, version, "grpc"]),
            inference_duration: self.inference_duration.with_label_values(&[model, version]),
            batch_rows: self.batch_rows.with_label_values(&[model, version]),
        }
    }

    /// Counts a request that did not end in 200 (rare path, so the label lookup is fine here).
    pub fn request_failed(&self, model: &str, version: &str, protocol: &str, code: u16) {
        let code = code.to_string();
        self.requests.with_label_values(&[model, version, protocol, &code]).inc();
    }

    pub fn observe_failed_duration(&self, model: &str, version: &str, protocol: &str, secs: f64) {
        self.request_duration.with_label_values(&[model, version, protocol]).observe(secs);
    }

    pub fn cluster_connected(&self, connected: bool) {
        self.cluster_connected.set(i64::from(connected));
    }

    pub fn cluster_replicas(&self, n: usize) {
        self.cluster_replicas.set(n as i64);
    }

    pub fn cluster_leader(&self, model: &str, leads: bool) {
        self.cluster_leader.with_label_values(&[model]).set(i64::from(leads));
    }

    pub fn cluster_revision(&self, revision: i64) {
        self.cluster_revision.set(revision);
    }

    pub fn files_changed(&self, model: &str, version: &str, changed: bool) {
        self.files_changed.with_label_values(&[model, version]).set(i64::from(changed));
    }

    pub fn set_ready(&self, model: &str, version: &str, ready: bool) {
        self.model_ready.with_label_values(&[model, version]).set(i64::from(ready));
    }

    /// After a load attempt: whether it failed, and the training-time accuracy the manifest ships (if any), which
    /// the live-accuracy alert compares delayed labels against.
    pub fn loaded(&self, model: &str, version: &str, failed: bool, training_accuracy: Option<f64>) {
        self.load_failed.with_label_values(&[model, version]).set(i64::from(failed));
        match training_accuracy {
            Some(a) => self.training_accuracy.with_label_values(&[model, version]).set(a),
            None => {
                let _ = self.training_accuracy.remove_label_values(&[model, version]);
            }
        }
    }

    /// A version unloaded on purpose: it neither failed nor has an accuracy to compare against any more.
    pub fn unloaded(&self, model: &str, version: &str) {
        self.set_ready(model, version, false);
        self.loaded(model, version, false, None);
        self.forget_upstream(model, version);
    }

    pub fn consumer_request(&self, model: &str, version: &str, consumer: &str) {
        self.consumer_requests.with_label_values(&[model, version, consumer]).inc();
    }

    pub fn inference_unauthenticated(&self, protocol: &str, reason: &str) {
        self.unauthenticated.with_label_values(&[protocol, reason]).inc();
    }

    pub fn cluster_enabled(&self) {
        self.cluster_enabled.set(1);
    }

    pub fn cluster_spec_revision(&self, model: &str, revision: i64) {
        self.cluster_spec_revision.with_label_values(&[model]).set(revision);
    }

    /// Mirrors a model's routing table into the stable and canary-weight gauges. Every known version gets a
    /// value, so a version that stops being stable or canary reads 0 rather than keeping its old value.
    pub fn set_routing(&self, model: &str, versions: &[u64], stable: Option<u64>, canary: Option<(u64, f64)>) {
        for n in versions {
            let v = n.to_string();
            self.stable.with_label_values(&[model, v.as_str()]).set(i64::from(stable == Some(*n)));
            let w = canary.filter(|(c, _)| c == n).map_or(0.0, |(_, w)| w);
            self.canary_weight.with_label_values(&[model, v.as_str()]).set(w);
        }
    }

    pub fn promoted(&self, model: &str) {
        self.promotions.with_label_values(&[model]).inc();
    }

    pub fn rolled_back(&self, model: &str, reason: &'static str) {
        self.rollbacks.with_label_values(&[model, reason]).inc();
    }

    /// Mirrors a model's rollout into the phase, step and failed-interval gauges: `phases` lists every phase
    /// label, so the ones the rollout is not in read 0.
    pub fn set_rollout(&self, model: &str, phases: &[&str], phase: &str, failed: u32, step: usize) {
        for p in phases {
            self.rollout_phase.with_label_values(&[model, p]).set(i64::from(*p == phase));
        }
        self.rollout_failed.with_label_values(&[model]).set(i64::from(failed));
        self.rollout_step.with_label_values(&[model]).set(step as i64 + 1);
    }

    pub fn rollout_decision(&self, model: &str, decision: &'static str) {
        self.rollout_decisions.with_label_values(&[model, decision]).inc();
    }

    /// Each check's value at the last analysis (`None` without data reads NaN).
    pub fn rollout_checks(&self, model: &str, checks: &[(&str, Option<f64>)]) {
        for (check, value) in checks {
            self.rollout_check.with_label_values(&[model, check]).set(value.unwrap_or(f64::NAN));
        }
    }

    pub fn invalid_value(&self, model: &str, version: &str, feature: &str, kind: &str) -> IntCounter {
        self.invalid_values.with_label_values(&[model, version, feature, kind])
    }

    /// Mirrors a version's drift window and age into gauges; called at scrape time, off the request path.
    pub fn set_skew(&self, model: &str, version: &str, drift: Option<&DriftSnapshot>, age: Duration, stale: bool) {
        let mv = [model, version];
        if let Some(snap) = drift {
            self.window_rows.with_label_values(&mv).set(snap.rows as i64);
            self.psi_max.with_label_values(&mv).set(snap.max_psi.unwrap_or(0.0));
            for f in &snap.features {
                let l = [model, version, f.name.as_str()];
                self.feature_psi.with_label_values(&l).set(f.psi.unwrap_or(0.0));
                self.feature_out_of_range.with_label_values(&l).set(f.out_of_range_share.unwrap_or(0.0));
            }
        }
        self.model_age.with_label_values(&mv).set(age.as_secs_f64());
        self.model_stale.with_label_values(&mv).set(i64::from(stale));
    }

    pub fn mirror_dropped(&self, reason: &'static str) {
        self.mirror_dropped.with_label_values(&[reason]).inc();
    }

    pub fn mirrored_pair(&self, model: &str, version: &str, shadow: &str, labels: u64, disagreed: u64) {
        let l = [model, version, shadow];
        self.mirror_pairs.with_label_values(&l).inc();
        self.label_compared.with_label_values(&l).inc_by(labels);
        self.label_disagreed.with_label_values(&l).inc_by(disagreed);
    }

    pub fn divergence(&self, model: &str, version: &str, shadow: &str, abs: f64, rel: f64) {
        let l = [model, version, shadow];
        self.divergence_abs.with_label_values(&l).observe(abs);
        self.divergence_rel.with_label_values(&l).observe(rel);
    }

    pub fn feedback(&self, model: &str, version: &str, outcome: &'static str, n: u64) {
        self.feedback.with_label_values(&[model, version, outcome]).inc_by(n);
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Counts a request as in flight until dropped, so cancelled requests (timeouts, disconnects) are uncounted too.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn new(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
