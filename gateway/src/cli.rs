//! `gateway admin ...`: the admin API from a terminal. Prints the JSON the API answers; exits non-zero with the
//! API's error message when a call is refused.

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, env = "GATEWAY_ADMIN_URL", default_value = "http://127.0.0.1:8003")]
    pub url: String,
    /// Bearer token (prefer the environment variable: command lines are visible to other users).
    #[arg(long, env = "GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// The fleet: this replica, the live replicas with their applied revision, and the analysis leader.
    Cluster,
    /// Every model with its versions, routing and recent events.
    List,
    /// One model in detail.
    Show { model: String },
    /// A model's event journal.
    Events { model: String },
    /// Load a version from the model repository (it takes no traffic until made canary or stable).
    Load { model: String, version: String },
    /// Unload a version that takes no traffic.
    Unload { model: String, version: String },
    /// Send a share of traffic (percent) to a version as the canary.
    Canary { model: String, version: String, weight: f64 },
    /// Copy a share of requests (percent) to a version as the shadow; its answers are compared, never returned.
    Shadow { model: String, version: String, percent: f64 },
    /// Stop the shadow.
    Unshadow { model: String },
    /// Train/serve skew of every ready version: drift, invalid values, divergence, feedback accuracy.
    Skew { model: String },
    /// Change the canary's share of traffic (percent).
    Weight { model: String, weight: f64 },
    /// Make the canary the stable version.
    Promote {
        model: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove the canary; stable takes all traffic.
    Rollback {
        model: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make a version stable directly (e.g. back to the previous one after a promotion).
    Stable {
        model: String,
        version: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Automatic canary analysis: start a rollout, see it, or steer it.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// The console's live view in a terminal: every model (or one) with its routing, rollout and traffic per
    /// version, refreshed in place until interrupted.
    Watch {
        model: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Start a rollout of a version as the canary, analysed and moved through the policy's weight steps.
    Start {
        model: String,
        version: String,
        /// Policy fields that differ from the configured policy, as JSON, e.g. '{"interval_secs": 5}'.
        #[arg(long)]
        policy: Option<String>,
    },
    /// The current or last rollout, with its last analysis.
    Status { model: String },
    /// Stop analysing; the weight stays.
    Pause { model: String },
    /// Analyse again (with a fresh window).
    Resume { model: String },
    /// End the rollout and remove the canary.
    Abort {
        model: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move to the next step now, without an analysis.
    Skip { model: String },
    /// Promote a rollout that waits for approval.
    Approve { model: String },
}

impl AdminCmd {
    fn request(&self) -> (Method, String, Option<Value>) {
        match self {
            Self::Cluster => (Method::GET, "/admin/cluster".into(), None),
            Self::List => (Method::GET, "/admin/models".into(), None),
            Self::Show { model } => (Method::GET, format!("/admin/models/{model}"), None),
            Self::Events { model } => (Method::GET, format!("/admin/models/{model}/events"), None),
            Self::Load { model, version } => {
                (Method::POST, format!("/admin/models/{model}/versions/{version}/load"), None)
            }
            Self::Unload { model, version } => {
                (Method::POST, format!("/admin/models/{model}/versions/{version}/unload"), None)
            }
            Self::Canary { model, version, weight } => (
                Method::POST,
                format!("/admin/models/{model}/canary"),
                Some(json!({"version": version, "weight": weight})),
            ),
            Self::Shadow { model, version, percent } => (
                Method::POST,
                format!("/admin/models/{model}/shadow"),
                Some(json!({"version": version, "percent": percent})),
            ),
            Self::Unshadow { model } => (Method::DELETE, format!("/admin/models/{model}/shadow"), None),
            Self::Skew { model } => (Method::GET, format!("/admin/models/{model}/skew"), None),
            Self::Weight { model, weight } => {
                (Method::PUT, format!("/admin/models/{model}/canary/weight"), Some(json!({"weight": weight})))
            }
            Self::Promote { model, reason } => {
                (Method::POST, format!("/admin/models/{model}/promote"), Some(json!({"reason": reason})))
            }
            Self::Rollback { model, reason } => {
                (Method::POST, format!("/admin/models/{model}/rollback"), Some(json!({"reason": reason})))
            }
            Self::Stable { model, version, reason } => (
                Method::PUT,
                format!("/admin/models/{model}/stable"),
                Some(json!({"version": version, "reason": reason})),
            ),
            Self::Rollout(cmd) => cmd.request(),
            Self::Watch { model, .. } => match model {
                Some(m) => (Method::GET, format!("/admin/models/{m}"), None),
                None => (Method::GET, "/admin/models".into(), None),
            },
        }
    }
}

impl RolloutCmd {
    fn request(&self) -> (Method, String, Option<Value>) {
        let command = |model: &str, name: &str, reason: &str| {
            (Method::POST, format!("/admin/models/{model}/rollout/{name}"), Some(json!({"reason": reason})))
        };
        match self {
            Self::Start { model, version, policy } => {
                // Invalid JSON is passed on as a string, so the API's message names the problem.
                let policy = policy.as_deref().map(|p| serde_json::from_str(p).unwrap_or(Value::String(p.into())));
                let mut body = json!({"version": version});
                if let Some(p) = policy {
                    body["policy"] = p;
                }
                (Method::POST, format!("/admin/models/{model}/rollout"), Some(body))
            }
            Self::Status { model } => (Method::GET, format!("/admin/models/{model}/rollout"), None),
            Self::Pause { model } => command(model, "pause", ""),
            Self::Resume { model } => command(model, "resume", ""),
            Self::Abort { model, reason } => command(model, "abort", reason),
            Self::Skip { model } => command(model, "skip", ""),
            Self::Approve { model } => command(model, "approve", ""),
        }
    }
}

/// Calls the admin API; returns the status and the JSON body.
pub async fn call(
    url: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let authority = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("--url must start with http://"))?;
    let authority = authority.trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, authority);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let bytes = match body {
        Some(b) => {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))))
}

/// Runs one admin command and prints its answer. Returns the process exit status.
pub async fn run(args: AdminArgs) -> anyhow::Result<bool> {
    if let AdminCmd::Watch { model, interval, count } = &args.cmd {
        return watch(&args, model.as_deref(), *interval, *count).await;
    }
    let (method, path, body) = args.cmd.request();
    let (status, value) = call(&args.url, args.token.as_deref(), method, &path, body).await?;
    if (200..300).contains(&status) {
        println!("{}", serde_json::to_string_pretty(&value)?);
        Ok(true)
    } else {
        let msg = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned);
        eprintln!("error ({status}): {msg}");
        Ok(false)
    }
}

/// `gateway admin watch`: polls the models (and each one's traffic history) and redraws a compact table in place.
/// A refused call (a wrong token, an unknown model) ends the watch with the server's message.
async fn watch(args: &AdminArgs, model: Option<&str>, interval: f64, count: Option<u64>) -> anyhow::Result<bool> {
    use std::io::{IsTerminal, Write};
    let token = args.token.as_deref();
    let tty = std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        let (method, path, body) = args.cmd.request();
        let (status, value) = call(&args.url, token, method, &path, body).await?;
        if !(200..300).contains(&status) {
            let msg = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned);
            eprintln!("error ({status}): {msg}");
            return Ok(false);
        }
        let models = if model.is_some() { vec![value] } else { value.as_array().cloned().unwrap_or_default() };
        let mut traffic = std::collections::HashMap::new();
        for m in &models {
            let name = m["name"].as_str().unwrap_or_default();
            let (_, t) = call(&args.url, token, Method::GET, &format!("/admin/models/{name}/traffic"), None).await?;
            let (_, r) = call(&args.url, token, Method::GET, &format!("/admin/models/{name}/rollout"), None).await?;
            traffic.insert(name.to_string(), (t, r));
        }
        let frame = render_watch(&models, &traffic, &crate::clock::now_rfc3339());
        let mut out = std::io::stdout().lock();
        // In a terminal the frame replaces the last one; piped, frames follow each other.
        if tty {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        writeln!(out, "{frame}")?;
        out.flush()?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(true);
        }
        tokio::time::sleep(std::time::Duration::from_secs_f64(interval.max(0.2))).await;
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// One frame of `watch`: per model its routing and rollout, then per version its state, role and the latest
/// traffic point (requests/s, server error rate, p50/p99).
pub fn render_watch(models: &[Value], extra: &std::collections::HashMap<String, (Value, Value)>, now: &str) -> String {
    let mut out = format!("gateway models at {now}\n");
    for m in models {
        let name = m["name"].as_str().unwrap_or("?");
        let (traffic, rollout) = extra.get(name).cloned().unwrap_or_default();
        let canary = m["canary"]
            .as_object()
            .map(|c| format!("{} at {}%", c["version"].as_str().unwrap_or("?"), num(&c["weight_percent"], 1)))
            .unwrap_or_else(|| "-".into());
        let shadow = m["shadow"]
            .as_object()
            .map(|c| format!("{} ({}%)", c["version"].as_str().unwrap_or("?"), num(&c["percent"], 1)))
            .unwrap_or_else(|| "-".into());
        out += &format!(
            "\n{name}  ready={}  stable={}  canary={canary}  shadow={shadow}\n",
            m["ready"].as_bool().unwrap_or(false),
            m["stable"].as_str().unwrap_or("-"),
        );
        if let Some(phase) = rollout["phase"].as_str() {
            out += &format!(
                "  rollout of {}: {phase}, weight {}%, failed intervals {}: {}\n",
                rollout["canary"],
                num(&rollout["weight_percent"], 1),
                rollout["failed_intervals"],
                rollout["message"].as_str().unwrap_or(""),
            );
        }
        let last = traffic["points"].as_array().and_then(|p| p.last()).cloned().unwrap_or_default();
        out += &format!(
            "  {:<8} {:<8} {:<8} {:>9} {:>7} {:>8} {:>8}\n",
            "version", "state", "role", "req/s", "err %", "p50 ms", "p99 ms"
        );
        for v in m["versions"].as_array().into_iter().flatten() {
            let id = v["version"].as_str().unwrap_or("?");
            let t = &last["versions"][id];
            let err = t["error_rate"].as_f64().map_or_else(|| "-".into(), |e| format!("{:.2}", e * 100.0));
            out += &format!(
                "  {:<8} {:<8} {:<8} {:>9} {:>7} {:>8} {:>8}\n",
                id,
                v["state"].as_str().unwrap_or("?"),
                v["role"].as_str().unwrap_or("?"),
                num(&t["rps"], 1),
                err,
                num(&t["p50_ms"], 2),
                num(&t["p99_ms"], 2),
            );
            if let Some(reason) = v["reason"].as_str() {
                out += &format!("           {reason}\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_frame_shows_routing_rollout_and_traffic() {
        let models = vec![json!({
            "name": "m", "ready": true, "stable": "2", "canary": {"version": "3", "weight_percent": 10.0},
            "shadow": null,
            "versions": [
                {"version": "2", "state": "ready", "role": "stable"},
                {"version": "3", "state": "ready", "role": "canary"},
                {"version": "4", "state": "failed", "role": "none", "reason": "golden example 0 failed"},
            ],
        })];
        let mut extra = std::collections::HashMap::new();
        extra.insert(
            "m".to_string(),
            (
                json!({"points": [{"at": "t", "versions": {"2": {"rps": 90.0, "error_rate": 0.0, "p50_ms": 0.4,
                    "p99_ms": 1.25}, "3": {"rps": 10.0, "error_rate": 0.1, "p50_ms": null, "p99_ms": null}}}]}),
                json!({"canary": 3, "phase": "progressing", "weight_percent": 10.0, "failed_intervals": 1,
                    "message": "holding"}),
            ),
        );
        let frame = render_watch(&models, &extra, "now");
        assert!(frame.contains("stable=2  canary=3 at 10.0%  shadow=-"), "{frame}");
        assert!(frame.contains("rollout of 3: progressing, weight 10.0%, failed intervals 1: holding"), "{frame}");
        let row2 = frame.lines().find(|l| l.trim_start().starts_with("2 ")).expect("row for 2");
        assert!(row2.contains("90.0") && row2.contains("1.25"), "{row2}");
        let row3 = frame.lines().find(|l| l.trim_start().starts_with("3 ")).expect("row for 3");
        assert!(row3.contains("10.00") && row3.contains(" - "), "{row3}");
        assert!(frame.contains("golden example 0 failed"), "{frame}");
    }
}
