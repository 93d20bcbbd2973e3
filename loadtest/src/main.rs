//! The `loadtest` binary: resolve the target, build the workload, run, and write the reports.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use loadtest::client::http::{encode_binary, get_json};
use loadtest::client::{Protocol, Target};
use loadtest::report::{Report, html, table};
use loadtest::runner::{Mode, Plan, run};
use loadtest::workload;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for Open Inference Protocol servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one load scenario and write its reports.
    Run(Box<RunArgs>),
    /// Print a Markdown table of JSON reports.
    Table {
        /// JSON reports written by `run`.
        reports: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Base URL of the server: http://host:port for JSON over HTTP, grpc://host:port for gRPC; https:// and
    /// grpcs:// over TLS.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model to call.
    #[arg(long)]
    model: String,
    /// Version in the URL path (`/versions/{v}/infer`); default: the server's routing decides.
    #[arg(long)]
    model_version: Option<String>,
    /// Open loop at this many requests per second; without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Connections (= concurrent requests in closed loop).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Rows per request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Stop after this many requests in the measured phase.
    #[arg(long)]
    max_requests: Option<u64>,
    /// The server's process id, when it runs on this machine: its CPU time per request in the measured phase is
    /// reported beside the load tester's own.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Manifest whose training baseline bounds the random rows (min/max per feature).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The model's inputs as `name:DATATYPE:dim[xdim...]` (batch dimension left out), instead of reading the
    /// server's model metadata; for servers without the metadata endpoint.
    #[arg(long)]
    signature: Vec<String>,
    /// JSON Lines file of rows to send instead of random rows.
    #[arg(long)]
    rows_file: Option<PathBuf>,
    /// Pin every request to this version with the pin header.
    #[arg(long)]
    pin_version: Option<String>,
    /// Name of the version pin header.
    #[arg(long, default_value = "x-model-version")]
    pin_header: String,
    /// Send a routing key drawn from this many distinct keys on every request.
    #[arg(long)]
    routing_keys: Option<u64>,
    /// Name of the routing-key header.
    #[arg(long, default_value = "x-routing-key")]
    routing_key_header: String,
    /// HTTP only: send tensors with the binary tensor data extension and ask for binary answers (tritonclient's
    /// defaults) instead of JSON.
    #[arg(long)]
    binary: bool,
    /// TLS: PEM bundle of the CAs to trust (default: the system's trust store).
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// TLS: client certificate (PEM) for servers that require mTLS; with --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS: the client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Write the first request body exactly as it would be sent (gRPC: the framed message) to this file and exit,
    /// for a second load tool to send the same bytes (`make bench` compares with h2load).
    #[arg(long)]
    dump_request: Option<PathBuf>,
    /// Scenario name, used in reports and file names.
    #[arg(long, default_value = "run")]
    scenario: String,
    /// Directory for `<scenario>.json` and `<scenario>.html`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runtime threads for the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Allow a target that is not on this machine's loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Exit non-zero if any request failed.
    #[arg(long)]
    fail_on_errors: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Table { reports } => {
            let mut rs = Vec::new();
            for p in reports {
                let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
                rs.push(
                    serde_json::from_str::<Report>(&text)
                        .with_context(|| format!("{} is not a report", p.display()))?,
                );
            }
            print!("{}", table(&rs));
            Ok(())
        }
        Cmd::Run(args) => {
            // Every second task from the shared queue, as the gateway does: with thousands of connections the
            // default interval left some of the generator's own tasks waiting in it, and the latencies charged
            // that to the server (10,000 connections, one thread, against the gateway: p99.9 0.42 s and max 0.52 s
            // with the default, 0.34 and 0.34 s with 2).
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads.max(1))
                .global_queue_interval(2)
                .enable_all()
                .build()?;
            rt.block_on(run_cmd(*args))
        }
    }
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    let (protocol, secure, rest) = if let Some(rest) = a.url.strip_prefix("http://") {
        (Protocol::Http, false, rest)
    } else if let Some(rest) = a.url.strip_prefix("https://") {
        (Protocol::Http, true, rest)
    } else if let Some(rest) = a.url.strip_prefix("grpc://") {
        (Protocol::Grpc, false, rest)
    } else if let Some(rest) = a.url.strip_prefix("grpcs://") {
        (Protocol::Grpc, true, rest)
    } else {
        bail!("--url must start with http:// or https:// (JSON over HTTP), or grpc:// or grpcs:// (gRPC)")
    };
    let authority = rest.split('/').next().unwrap_or(rest).to_string();
    let tls = match secure {
        true => {
            let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
            let name = a.server_name.as_deref().unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
            let alpn: &[u8] = if protocol == Protocol::Grpc { b"h2" } else { b"http/1.1" };
            let identity = a.cert.as_deref().zip(a.key.as_deref());
            Some(loadtest::client::tls::Tls::new(a.cacert.as_deref(), identity, name, alpn)?)
        }
        false => None,
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to nothing"))?;
    if !addr.ip().is_loopback() && !a.allow_remote {
        bail!("{addr} is not a loopback address; pass --allow-remote to load another machine");
    }
    let target = Target {
        protocol,
        addr,
        authority,
        model: a.model.clone(),
        version: a.model_version.clone(),
        pin: a.pin_version.clone().map(|v| (a.pin_header.clone(), v)),
        routing_key: a.routing_keys.map(|n| (a.routing_key_header.clone(), n)),
        tls,
    };
    let meta_path = match &a.model_version {
        Some(v) => format!("/v2/models/{}/versions/{v}", a.model),
        None => format!("/v2/models/{}", a.model),
    };
    let meta = if !a.signature.is_empty() {
        signature_metadata(&a.signature)?
    } else if protocol == Protocol::Grpc {
        loadtest::client::grpc::metadata(&target).await.context("cannot read the model metadata over gRPC")?
    } else {
        get_json(&target, &meta_path).await.context("cannot read the model metadata")?
    };
    let manifest = match &a.manifest {
        Some(p) => Some(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?),
        None => None,
    };
    let inputs = workload::inputs_from_metadata(&meta, manifest.as_ref())?;
    let mut wl = match &a.rows_file {
        Some(p) => workload::from_rows_file(&inputs, p, a.rows)?,
        None => workload::random(&inputs, a.rows, 256, 42),
    };
    if protocol == Protocol::Grpc {
        wl.bodies =
            wl.bodies.iter().map(|b| loadtest::client::grpc::encode(b, &target)).collect::<anyhow::Result<_>>()?;
    } else if a.binary {
        let encoded = wl.bodies.iter().map(|b| encode_binary(b)).collect::<anyhow::Result<Vec<_>>>()?;
        (wl.bodies, wl.header_lens) = encoded.into_iter().unzip();
    }
    if let Some(path) = &a.dump_request {
        let first = wl.bodies.first().context("the workload is empty")?;
        std::fs::write(path, first).with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(());
    }
    let plan = Plan {
        mode: a.rate.map_or(Mode::Closed, |rate| Mode::Open { rate }),
        connections: a.connections.max(1),
        duration: Duration::from_secs_f64(a.duration),
        warmup: Duration::from_secs_f64(a.warmup),
        timeout: Duration::from_secs_f64(a.timeout),
        max_requests: a.max_requests,
        server_pid: a.server_pid,
    };
    let progress = (!a.quiet).then(|| {
        let p = ProgressBar::new(plan.duration.as_secs());
        p.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        p
    });
    let result = run(&plan, Arc::new(target), Arc::new(wl), progress.clone()).await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let report = Report::build(&a.scenario, &a.url, &a.model, &plan, a.rows, &result);
    print!("{}", report.summary());
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)?;
        let json = dir.join(format!("{}.json", a.scenario));
        std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
        let page = dir.join(format!("{}.html", a.scenario));
        std::fs::write(&page, html::render(&report))?;
        println!("reports    {} and {}", json.display(), page.display());
    }
    if a.fail_on_errors && report.failed + report.not_sent > 0 {
        bail!("{} requests failed and {} were not sent", report.failed, report.not_sent);
    }
    Ok(())
}

/// Model metadata built from `--signature name:DATATYPE:30x2` arguments.
fn signature_metadata(specs: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut inputs = Vec::new();
    for s in specs {
        let mut parts = s.split(':');
        let (Some(name), Some(dt), Some(dims), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            bail!("--signature {s}: expected name:DATATYPE:dims");
        };
        let mut shape = vec![-1i64];
        for d in dims.split('x') {
            shape.push(d.parse().with_context(|| format!("--signature {s}: bad dimension '{d}'"))?);
        }
        inputs.push(serde_json::json!({"name": name, "datatype": dt, "shape": shape}));
    }
    Ok(serde_json::json!({ "inputs": inputs }))
}
