//! Structured log lines (SPEC 3.5) and the size-rotated `LogFile`.
//!
//! Every line the plugin writes is one JSON object:
//! `{"timestamp","level","message","server","operation","correlation_id","event","fields"}`.
//! Values that could be secret are never given to the logger in the first
//! place (they live in [`crate::secret::Secret`], whose formatting is redacted).

use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Fields promoted to the top level of a line; the rest go under `fields`.
const TOP_LEVEL: &[&str] = &["server", "operation", "correlation_id", "event"];

/// Formats one log line (without the trailing newline).
pub fn json_line(level: &str, message: &str, fields: &[(String, Value)]) -> String {
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        Value::from(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
    );
    line.insert("level".into(), Value::from(level));
    line.insert("message".into(), Value::from(message));
    for key in TOP_LEVEL {
        let value = fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(Value::Null, |(_, v)| v.clone());
        line.insert((*key).into(), value);
    }
    let rest: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| !TOP_LEVEL.contains(&k.as_str()))
        .cloned()
        .collect();
    line.insert("fields".into(), Value::Object(rest));
    Value::Object(line).to_string()
}

/// A log file rotated by size: `file` → `file.1` → … → `file.N` (the oldest is dropped).
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, backups: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            backups,
            file: Some(file),
            size,
        })
    }

    /// Appends one line, rotating first if it would exceed the size limit.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let needed = line.len() as u64 + 1;
        if self.size > 0 && self.size + needed > self.max_bytes {
            self.rotate()?;
        }
        let file = match self.file.as_mut() {
            Some(f) => f,
            None => {
                self.file = Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)?,
                );
                self.file.as_mut().expect("just opened")
            }
        };
        file.write_all(line.as_bytes())?;
        file.write_all(b"\n")?;
        self.size += needed;
        Ok(())
    }

    fn backup(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.backups == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.backup(self.backups)).or_else(ignore_missing)?;
            for n in (1..self.backups).rev() {
                std::fs::rename(self.backup(n), self.backup(n + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, self.backup(1)).or_else(ignore_missing)?;
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_promoted_fields() {
        let line = json_line(
            "WARNING",
            "token acquisition failed",
            &[
                ("server".into(), Value::from("pacs")),
                ("code".into(), Value::from("NET-002")),
            ],
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["server"], "pacs");
        assert_eq!(v["correlation_id"], Value::Null);
        assert_eq!(v["fields"]["code"], "NET-002");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotates_at_the_size_limit_and_keeps_n_backups() {
        let dir = std::env::temp_dir().join(format!("rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plugin.log");
        let mut file = RotatingFile::open(&path, 1024, 2).unwrap();
        let line = "x".repeat(299);
        for _ in 0..20 {
            file.write_line(&line).unwrap();
        }
        for p in [
            path.clone(),
            dir.join("plugin.log.1"),
            dir.join("plugin.log.2"),
        ] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 1024 && len > 0, "{} is {len} bytes", p.display());
        }
        assert!(!dir.join("plugin.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
