//! Logging setup: plain or JSON lines through `tracing`, filtered by config or `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LoggingConfig;

/// Installs the global subscriber. Called once, by the binary; tests leave logging off.
pub fn init(cfg: &LoggingConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = if cfg.format == "json" { builder.json().try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
