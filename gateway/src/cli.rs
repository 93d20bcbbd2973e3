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
