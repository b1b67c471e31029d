//! Logs on stderr, filtered by `RUST_LOG`, as text for people or one JSON object per line for
//! log shippers. Colour codes only on a terminal: escape codes in captured logs broke scraping
//! (field note 9).

use std::io::IsTerminal;

use eyre::WrapErr;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text for people; colour only on a terminal.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the process's log subscriber: `RUST_LOG` when it is set and not empty (an invalid
/// filter is an error, not a silent default), `default_filter` otherwise.
pub fn init(format: LogFormat, default_filter: &str) -> eyre::Result<()> {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .try_init(),
    };
    installed.map_err(|err| eyre::eyre!("cannot install the log subscriber: {err}"))
}

/// The filter `RUST_LOG` (as read, `None` when unset) asks for, or `default_filter` when it is
/// unset or blank.
fn filter(rust_log: Option<&str>, default_filter: &str) -> eyre::Result<EnvFilter> {
    match rust_log {
        Some(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)
            .wrap_err_with(|| {
                format!("RUST_LOG={directives:?} is not a valid tracing filter; fix or unset it")
            }),
        _ => EnvFilter::try_new(default_filter)
            .wrap_err_with(|| format!("invalid default log filter {default_filter:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn unset_or_blank_rust_log_falls_back_to_the_default() {
        assert_eq!(filter(None, "warn").unwrap().to_string(), "warn");
        assert_eq!(filter(Some("  "), "warn").unwrap().to_string(), "warn");
        assert_eq!(filter(Some("debug"), "warn").unwrap().to_string(), "debug");
    }

    #[test]
    fn an_invalid_rust_log_is_an_error_not_a_silent_default() {
        let err = filter(Some("agent=notalevel"), "info").unwrap_err();
        assert!(format!("{err:#}").contains("RUST_LOG"), "{err:#}");
    }
}
