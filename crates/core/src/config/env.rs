//! `${VAR}` substitution in every string of the section.

use super::ConfigError;
use crate::error::ErrorCode;
use serde_json::Value;

/// Replaces each `${NAME}` in every string of `value` with `lookup(NAME)`.
///
/// `path` is the key path of `value`, used to name the key in errors. `$$`
/// escapes a literal `$`. An unset variable is CFG-003, naming the variable
/// and the key but never any value.
pub fn substitute(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                *s = substitute_str(s, path, lookup)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| substitute(v, &format!("{path}[{i}]"), lookup)),
        Value::Object(map) => map
            .iter_mut()
            .try_for_each(|(k, v)| substitute(v, &format!("{path}.{k}"), lookup)),
        _ => Ok(()),
    }
}

fn substitute_str(
    s: &str,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                ConfigError::at_path(ErrorCode::Cfg002, path, "unterminated ${ in value")
            })?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::at_path(
                    ErrorCode::Cfg002,
                    path,
                    "invalid environment variable name in ${...}",
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                ConfigError::at_path(
                    ErrorCode::Cfg003,
                    path,
                    format!("environment variable {name} is not set"),
                )
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3cr3t".into()),
            "HOST" => Some("pacs.example".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_nested_strings() {
        let mut v = json!({"Servers": {"a": {"Url": "https://${HOST}/dicom-web", "ClientSecret": "${SECRET}",
                                            "List": ["x${EMPTY}y"], "N": 3}}});
        substitute(&mut v, "DicomWebOAuth", &env).unwrap();
        assert_eq!(v["Servers"]["a"]["Url"], "https://pacs.example/dicom-web");
        assert_eq!(v["Servers"]["a"]["ClientSecret"], "s3cr3t");
        assert_eq!(v["Servers"]["a"]["List"][0], "xy");
        assert_eq!(v["Servers"]["a"]["N"], 3);
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_kept() {
        let mut v = json!({"a": "p$$w${HOST}$x$"});
        substitute(&mut v, "S", &env).unwrap();
        assert_eq!(v["a"], "p$wpacs.example$x$");
    }

    #[test]
    fn unset_variable_is_cfg003_naming_variable_and_key() {
        let mut v = json!({"Servers": {"a": {"ClientSecret": "${NOPE}"}}});
        let e = substitute(&mut v, "DicomWebOAuth", &env).unwrap_err();
        assert_eq!(e.code, ErrorCode::Cfg003);
        assert_eq!(e.key, "DicomWebOAuth.Servers.a.ClientSecret");
        assert!(e.message.contains("NOPE"), "{e}");
    }

    #[test]
    fn malformed_reference_is_cfg002() {
        let mut v = json!({"a": "${UNCLOSED"});
        assert_eq!(
            substitute(&mut v, "S", &env).unwrap_err().code,
            ErrorCode::Cfg002
        );
        let mut v = json!({"a": "${bad-name}"});
        assert_eq!(
            substitute(&mut v, "S", &env).unwrap_err().code,
            ErrorCode::Cfg002
        );
    }
}
