//! Routes `tracing` events of the core and the plugin to Orthanc's logger,
//! as JSON lines (SPEC 3.5), and to the optional rotated `LogFile`.
//!
//! Fields of the enclosing spans (the request's `correlation_id`, `server`,
//! `operation`) are added to every line logged inside them.

use crate::ffi::{self, LogSeverity};
use dicomweb_oauth_core::config::{Config, LogLevel};
use dicomweb_oauth_core::logging::{json_line, RotatingFile};
use serde_json::Value;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The most verbose level written (the configuration's `LogLevel`).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(level_rank(Level::INFO));
/// The `LogFile`, when configured.
static LOG_FILE: Mutex<Option<RotatingFile>> = Mutex::new(None);

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

/// Applies `LogLevel` and opens `LogFile`; an unwritable file is reported, not fatal.
pub fn configure(config: &Config) {
    let max = match config.log_level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error => Level::ERROR,
    };
    MAX_LEVEL.store(level_rank(max), Ordering::Relaxed);
    let file = config.log_file.as_ref().and_then(|path| {
        match RotatingFile::open(path, config.log_file_max_bytes, config.log_file_backups) {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(
                    event = "config_error",
                    "cannot open LogFile {}: {e}; logging to Orthanc only",
                    path.display()
                );
                None
            }
        }
    });
    *LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()) = file;
}

/// Closes the `LogFile` (at finalization).
pub fn close() {
    *LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

struct OrthancLayer;

/// The fields a span was created with, kept in its extensions.
struct SpanFields(Vec<(String, Value)>);

impl<S> Layer<S> for OrthancLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        metadata.is_span() || level_rank(*metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = FieldVisitor::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    visitor.fields.extend(fields.0.iter().cloned());
                }
            }
        }
        event.record(&mut visitor);
        let (severity, level) = match *event.metadata().level() {
            Level::ERROR => (LogSeverity::Error, "ERROR"),
            Level::WARN => (LogSeverity::Warning, "WARNING"),
            Level::INFO => (LogSeverity::Info, "INFO"),
            _ => (LogSeverity::Info, "DEBUG"),
        };
        let line = json_line(level, &visitor.message, &visitor.fields);
        ffi::log(severity, &line);
        if let Some(file) = LOG_FILE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = file.write_line(&line);
        }
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: Vec<(String, Value)>,
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields
                .push((field.name().to_owned(), Value::from(text)));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name().to_owned(), Value::from(value)));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }
}
