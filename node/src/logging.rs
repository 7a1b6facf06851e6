//! Log setup: `tracing` to stderr, filtered by `GOOP_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Only the binary calls this; libraries just emit events.
pub(crate) fn init() {
    let filter = EnvFilter::try_from_env("GOOP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
