//! Log output: human text (colour only on a terminal) or one JSON object per line, on stderr.

use crate::config::{LogFormat, LogLevel};
use std::io::IsTerminal;
use tracing::level_filters::LevelFilter;

/// Installs the global subscriber. Called once, by `main`.
pub fn init(format: LogFormat, level: LogLevel) {
    let level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    // deadpool's connection task warns "Connection error: connection closed" when the server
    // ends a session, with no word of which or why; portcullis's own message says both (a
    // session it ended itself, a server restart), so that line shows only in debug logs.
    let quiet = if level >= LevelFilter::DEBUG {
        ""
    } else {
        ",deadpool.postgres=off"
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("{level}{quiet}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
