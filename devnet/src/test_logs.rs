//! Logging for the project's tests, set up once per test binary: every crate's tests log the
//! same way (to the test writer, shown for a failing test; no colour codes; `RUST_LOG` filters).

/// Installs the test subscriber with `default_filter` unless `RUST_LOG` says otherwise. Several
/// tests share a process: the first call installs it, later calls change nothing.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Err only when a subscriber is already installed, by an earlier test of this process.
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}
