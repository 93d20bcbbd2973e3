//! The `gateway` binary: parse the command line, load and validate the config, set up logging, and run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use gateway::config::Config;

/// The gateway's own heap is jemalloc's: a request allocates and frees a few dozen small blocks, often on different
/// threads, and glibc's malloc and free were the largest single cost the gateway adds per request. Closed loop, v1,
/// 64 connections, alternating 10 s runs of the same commit built both ways (2026-12-05): HTTP 64.4k and 61.6k req/s
/// against 60.4k and 56.5k with glibc, gRPC 52.9k and 53.3k against 49.4k and 47.8k. Background threads return
/// freed pages after jemalloc's decay time (10 s), as the glibc trim below did. ONNX Runtime, a C++ library,
/// still allocates through glibc, so the arena limit and the trim stay for its heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Every this many tasks, an async worker takes its next task from the runtime's shared queue before its own. With
/// thousands of busy connections a worker's own queue never empties, and the tasks that overflowed from it into the
/// shared queue waited behind it (tokio's default interval, tuned to about 200 us of polling, is dozens of tasks):
/// at 10,000 connections, one request in flight each, a few hundred connections got answers in 3 ms while the rest
/// waited 1.8 s (p50 3 ms, p99 1.8 s, one worker). Taking every second task from the shared queue serves both in
/// turn: p99 0.36 s and max 0.52 s against a mean of 0.15 s. It costs throughput there (pinned pairs 56k to 62k
/// against 60k to 71k req/s): the unfair schedule kept serving connections whose state stayed in cache. Nothing is
/// lost at 64 connections. 1 would starve the worker's own queue instead (tokio-rs/tokio#7605).
const GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// Open Inference Protocol gateway for ONNX models.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "config/gateway.toml", env = "GATEWAY_CONFIG")]
    config: PathBuf,
    /// Overrides server.http_addr.
    #[arg(long)]
    http_addr: Option<String>,
    /// Overrides server.grpc_addr.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Overrides server.metrics_addr.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Overrides admin.addr.
    #[arg(long)]
    admin_addr: Option<String>,
    /// Overrides state.dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides models.repository.
    #[arg(long)]
    model_repository: Option<PathBuf>,
    /// Overrides inference.threads (0 = one per CPU).
    #[arg(long)]
    inference_threads: Option<usize>,
    /// Overrides logging.format (plain or json).
    #[arg(long)]
    log_format: Option<String>,
    /// Overrides cluster.endpoints (etcd URLs, comma-separated): cluster mode.
    #[arg(long, value_delimiter = ',')]
    cluster_endpoints: Option<Vec<String>>,
    /// Overrides cluster.replica (this replica's name in the cluster).
    #[arg(long)]
    replica: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Call the admin API (model lifecycle and canaries). Without a subcommand, the gateway serves.
    Admin(gateway::cli::AdminArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Admin(args)) = cli.command {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(gateway::cli::run(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut config = match Config::from_file(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = cli.http_addr {
        config.server.http_addr = v;
    }
    if let Some(v) = cli.grpc_addr {
        config.server.grpc_addr = v;
    }
    if let Some(v) = cli.metrics_addr {
        config.server.metrics_addr = v;
    }
    if let Some(v) = cli.admin_addr {
        config.admin.addr = v;
    }
    if let Some(v) = cli.state_dir {
        config.state.dir = v;
    }
    if let Some(v) = cli.model_repository {
        config.models.repository = v;
    }
    if let Some(v) = cli.inference_threads {
        config.inference.threads = v;
    }
    if let Some(v) = cli.log_format {
        config.logging.format = v;
    }
    if let Some(v) = cli.cluster_endpoints {
        config.cluster.endpoints = v;
    }
    if let Some(v) = cli.replica {
        config.cluster.replica = Some(v);
    }
    let config = match config.check() {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("error: invalid configuration in {}:", cli.config.display());
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("configuration {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gateway-io")
        .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporter's channel lives on it. Dropped after the drain, flushing the spans.
    let telemetry =
        match runtime.block_on(async { gateway::telemetry::init(&config.config.logging, &config.config.tracing) }) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    trim_freed_memory_periodically();
    let result = runtime.block_on(gateway::run(config, shutdown_signal()));
    runtime.block_on(async { tokio::task::spawn_blocking(move || drop(telemetry)).await.ok() });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How often memory freed in glibc's heap (ONNX Runtime's; the gateway's own heap is jemalloc's) is handed back.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// glibc keeps what is freed inside its per-thread arenas for reuse, and only gives back what lies at the top of
/// an arena. Requests are allocated on one thread and freed on another, so the arenas fill with free pages between
/// live allocations: under `make soak` their size grew about 7 KB/s while the bytes in use grew 0.6 KB/s, and after
/// a burst of 10,000 connections the process kept hundreds of MiB. `malloc_trim` returns every whole free page of
/// every arena; a call took 0.09 to 0.17 ms under the soak's load (perf uprobes), once every 10 s.
/// (mimalloc as the global allocator was tried instead: its resident memory grew fifteen times faster under the
/// same soak.) These figures are from before the gateway's own heap moved to jemalloc; what is left here is ONNX
/// Runtime's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim_freed_memory_periodically() {
    let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| {
        loop {
            std::thread::sleep(TRIM_INTERVAL);
            // SAFETY: malloc_trim only takes glibc's arena locks; it has no preconditions on the caller.
            unsafe { libc::malloc_trim(0) };
        }
    });
    if let Err(e) = spawned {
        eprintln!("warning: cannot start the memory trim thread: {e}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_freed_memory_periodically() {}

/// glibc gives each thread that meets a locked arena a new one, up to eight per core, and free pages stay scattered
/// across all of them. The trim above returns whole free pages, but not the half-used ones: with the default arenas
/// `make soak`'s resident memory kept rising about 1.4 KB/s after its journal reached its cap; with two arenas it was
/// flat (+4.1 % over 30 min instead of +6.9 %). Two arenas cost nothing measurable on two cores: closed loop, v1,
/// 64 connections, four alternating 10 s runs each, HTTP 613.6k against 615.5k requests and gRPC 524.5k against
/// 511.2k (2026-12-05). Called before the runtime starts its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    /// How many malloc arenas glibc may create, unless `MALLOC_ARENA_MAX` in the environment says otherwise.
    const MALLOC_ARENAS: libc::c_int = 2;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a glibc tunable under its own lock; M_ARENA_MAX with a positive value is valid.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) } != 1 {
        eprintln!("warning: cannot limit malloc's arenas to {MALLOC_ARENAS}");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
