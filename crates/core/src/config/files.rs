//! Reading the section as written in Orthanc's configuration file(s).
//!
//! Orthanc replaces `${VAR}` itself before handing its configuration to
//! plugins, and silently turns an unset variable into an empty string. To
//! report an unset variable as CFG-003 naming it (SPEC 3.1), the plugin reads
//! its own section from the file(s) Orthanc was started with, before that
//! substitution. Orthanc's files are JSON with `//` and `/* */` comments; a
//! path may be a folder of `.json` files.

use serde_json::Value;
use std::path::Path;

/// The `DicomWebOAuth` section as written in the configuration at `path`
/// (a file or a folder of `.json` files); `None` if no file holds it or a
/// file cannot be read as JSON (then Orthanc's own copy is used).
pub fn raw_section(path: &Path) -> Option<Value> {
    let files = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let value: Value = serde_json::from_str(&strip_comments(&text)).ok()?;
        value.get(super::SECTION).cloned()
    })
}

/// Removes `//` and `/* */` comments outside JSON strings.
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        out.push(escaped);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut previous = '\0';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_comments_but_not_strings() {
        let text = r#"{ // line
            "a": "http://x//y", /* block
            comment */ "b": "/* kept */", "c": "q\"//"
        }"#;
        let v: Value = serde_json::from_str(&strip_comments(text)).unwrap();
        assert_eq!(
            v,
            json!({"a": "http://x//y", "b": "/* kept */", "c": "q\"//"})
        );
    }

    #[test]
    fn finds_the_section_in_a_file_or_a_folder() {
        let dir = std::env::temp_dir().join(format!("raw-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"{"HttpPort": 1 // x
        }"#,
        )
        .unwrap();
        std::fs::write(dir.join("b.json"), r#"{"DicomWebOAuth": {"X": "${VAR}"}}"#).unwrap();
        assert_eq!(raw_section(&dir), Some(json!({"X": "${VAR}"})));
        assert_eq!(raw_section(&dir.join("a.json")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
