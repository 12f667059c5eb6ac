//! Log output through `tracing`: human-readable text (the default) or one JSON object per line,
//! on standard error. The level comes from `--log-level`, else `RUST_LOG`, else `info`.

use crate::AgentError;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The filter: `level` (a level or a full `RUST_LOG`-style directive) if given, else the
/// `RUST_LOG` environment variable, else `info`.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, AgentError> {
    let spec = match level {
        Some(l) => l.to_string(),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "info".into()),
    };
    EnvFilter::try_new(&spec).map_err(|e| AgentError::Invalid {
        what: format!("log level {spec:?}"),
        detail: e.to_string(),
    })
}

/// Installs the process's subscriber (once; later calls fail).
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), AgentError> {
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_writer(std::io::stderr);
    let r = match format {
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => b.json().with_current_span(false).try_init(),
    };
    r.map_err(|e| AgentError::Invalid {
        what: "installing the log subscriber".into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_level_wins_and_nonsense_is_refused() {
        assert_eq!(filter(Some("debug")).unwrap().to_string(), "debug");
        assert_eq!(
            filter(Some("cellwall_agent=trace,warn"))
                .unwrap()
                .to_string(),
            "cellwall_agent=trace,warn"
        );
        assert!(filter(Some("loud=[")).is_err());
    }
}
