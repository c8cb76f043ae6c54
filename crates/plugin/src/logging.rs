//! Routes `tracing` events of the core and the plugin to Orthanc's logger.

use crate::ffi::{self, LogSeverity};
use dicomweb_oauth_core::config::LogLevel;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The most verbose level written (the configuration's `LogLevel`).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(level_rank(Level::INFO));

const fn level_rank(level: Level) -> u8 {
    match level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

/// Installs the Orthanc log layer once per process (a reloaded plugin keeps the first).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(OrthancLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

pub fn set_level(level: LogLevel) {
    let max = match level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    MAX_LEVEL.store(level_rank(max), Ordering::Relaxed);
}

struct OrthancLayer;

impl<S: Subscriber> Layer<S> for OrthancLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        level_rank(*metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = LineVisitor::default();
        event.record(&mut line);
        let severity = match *event.metadata().level() {
            Level::ERROR => LogSeverity::Error,
            Level::WARN => LogSeverity::Warning,
            _ => LogSeverity::Info,
        };
        ffi::log(
            severity,
            &format!("[dicomweb-oauth] {}{}", line.message, line.fields),
        );
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}
