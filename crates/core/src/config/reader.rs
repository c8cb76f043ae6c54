//! Typed, validating reads of one JSON object against its key table.

use super::keys::{self, Default, KeySpec, Kind};
use super::ConfigError;
use crate::error::ErrorCode;
use crate::secret::Secret;
use serde_json::{Map, Value};

/// One object of the section (the section itself, a server, a ResilienceConfig).
pub(crate) struct Reader<'a> {
    obj: &'a Map<String, Value>,
    table: &'static [KeySpec],
    /// Key path of this object, e.g. `DicomWebOAuth.Servers.pacs`.
    path: String,
    server: Option<String>,
}

impl<'a> Reader<'a> {
    /// Wraps `obj`, refusing any key its table does not know.
    pub fn new(
        obj: &'a Map<String, Value>,
        table: &'static [KeySpec],
        path: String,
        server: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let reader = Reader {
            obj,
            table,
            path,
            server: server.map(str::to_owned),
        };
        for name in obj.keys() {
            if keys::find(table, name).is_none() {
                let hint = match suggest(name, table) {
                    Some(s) => format!(" (did you mean '{s}'?)"),
                    None => String::new(),
                };
                return Err(reader.error(
                    ErrorCode::Cfg002,
                    name,
                    format!("unknown key '{name}'{hint}"),
                ));
            }
        }
        Ok(reader)
    }

    pub fn error(&self, code: ErrorCode, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            code,
            server: self.server.clone(),
            key: format!("{}.{name}", self.path),
            message: message.into(),
        }
    }

    pub fn path_of(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn spec(&self, name: &str) -> &'static KeySpec {
        keys::find(self.table, name)
            .unwrap_or_else(|| panic!("key {name} is missing from its key table"))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.obj.contains_key(name)
    }

    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name)
    }

    fn wrong_type(&self, name: &str, expected: &str) -> ConfigError {
        let found = match self.obj.get(name) {
            Some(Value::Null) => "null",
            Some(Value::Bool(_)) => "a boolean",
            Some(Value::Number(_)) => "a number",
            Some(Value::String(_)) => "a string",
            Some(Value::Array(_)) => "a list",
            Some(Value::Object(_)) => "an object",
            None => "nothing",
        };
        self.error(
            ErrorCode::Cfg002,
            name,
            format!("expected {expected}, found {found}"),
        )
    }

    pub fn missing(&self, name: &str, why: &str) -> ConfigError {
        self.error(
            ErrorCode::Cfg001,
            name,
            format!("missing required key{why}"),
        )
    }

    /// A string, or the table's default.
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.obj.get(name) {
            None => Ok(match self.spec(name).default {
                Default::Str(s) => Some(s.to_owned()),
                _ => None,
            }),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    /// A string that must not be empty when given.
    pub fn opt_nonempty(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.opt_str(name)? {
            Some(s) if s.trim().is_empty() => {
                Err(self.error(ErrorCode::Cfg002, name, "must not be empty"))
            }
            other => Ok(other),
        }
    }

    pub fn opt_secret(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        debug_assert!(self.spec(name).secret, "{name} is not marked secret");
        Ok(self.opt_nonempty(name)?.map(Secret::new))
    }

    /// One of the key's enumerated values, normalised to the table's spelling.
    pub fn enumerated(&self, name: &str) -> Result<&'static str, ConfigError> {
        let Kind::Enum(allowed) = self.spec(name).kind else {
            unreachable!("{name} is not an enum key")
        };
        let given = match self.opt_str(name)? {
            Some(s) => s,
            None => unreachable!("enum key {name} has no default"),
        };
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(given.trim()))
            .copied()
            .ok_or_else(|| {
                let shown = if self.spec(name).secret {
                    "value"
                } else {
                    given.as_str()
                };
                self.error(
                    ErrorCode::Cfg002,
                    name,
                    format!("'{shown}' is not one of: {}", allowed.join(", ")),
                )
            })
    }

    pub fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.obj.get(name) {
            None => match self.spec(name).default {
                Default::Bool(b) => Ok(b),
                _ => unreachable!("bool key {name} has no default"),
            },
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong_type(name, "true or false")),
        }
    }

    pub fn opt_integer(&self, name: &str) -> Result<Option<i64>, ConfigError> {
        let Kind::Integer { min, max } = self.spec(name).kind else {
            unreachable!("{name} is not an integer key")
        };
        let value = match self.obj.get(name) {
            None => match self.spec(name).default {
                Default::Integer(i) => return Ok(Some(i)),
                _ => return Ok(None),
            },
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.wrong_type(name, "an integer"))?,
            Some(_) => return Err(self.wrong_type(name, "an integer")),
        };
        if !(min..=max).contains(&value) {
            return Err(self.error(
                ErrorCode::Cfg002,
                name,
                format!("{value} is out of range {min}..={max}"),
            ));
        }
        Ok(Some(value))
    }

    pub fn integer(&self, name: &str) -> Result<i64, ConfigError> {
        Ok(self
            .opt_integer(name)?
            .unwrap_or_else(|| unreachable!("integer key {name} has no default")))
    }

    pub fn opt_number(&self, name: &str) -> Result<Option<f64>, ConfigError> {
        let Kind::Number { min, max } = self.spec(name).kind else {
            unreachable!("{name} is not a number key")
        };
        let value = match self.obj.get(name) {
            None => match self.spec(name).default {
                Default::Number(n) => return Ok(Some(n)),
                _ => return Ok(None),
            },
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| self.wrong_type(name, "a number"))?,
            Some(_) => return Err(self.wrong_type(name, "a number")),
        };
        if !(min..=max).contains(&value) {
            return Err(self.error(
                ErrorCode::Cfg002,
                name,
                format!("{value} is out of range {min}..={max}"),
            ));
        }
        Ok(Some(value))
    }

    pub fn number(&self, name: &str) -> Result<f64, ConfigError> {
        Ok(self
            .opt_number(name)?
            .unwrap_or_else(|| unreachable!("number key {name} has no default")))
    }

    /// An absolute http(s) URL. The value is never echoed (it may hold credentials).
    pub fn opt_http_url(&self, name: &str) -> Result<Option<url::Url>, ConfigError> {
        let Some(text) = self.opt_str(name)? else {
            return Ok(None);
        };
        let url = url::Url::parse(text.trim())
            .map_err(|e| self.error(ErrorCode::Cfg002, name, format!("malformed URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.error(
                ErrorCode::Cfg002,
                name,
                format!("URL scheme must be http or https, not '{}'", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.error(ErrorCode::Cfg002, name, "URL has no host"));
        }
        if url.fragment().is_some() {
            return Err(self.error(ErrorCode::Cfg002, name, "URL must not have a #fragment"));
        }
        Ok(Some(url))
    }

    /// A string or a list of strings.
    pub fn str_or_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        let split = |s: &str| -> Vec<String> {
            s.split([',', ' '])
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self.obj.get(name) {
            None => Ok(match self.spec(name).default {
                Default::Str(s) => split(s),
                _ => Vec::new(),
            }),
            Some(Value::String(s)) => Ok(split(s)),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.wrong_type(name, "a string or a list of strings"))
                })
                .collect(),
            Some(_) => Err(self.wrong_type(name, "a string or a list of strings")),
        }
    }

    /// A nested object, read with its own table.
    pub fn opt_object(&self, name: &str) -> Result<Option<Reader<'a>>, ConfigError> {
        let Kind::Object(table) = self.spec(name).kind else {
            unreachable!("{name} is not an object key")
        };
        match self.obj.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Reader::new(
                map,
                table,
                self.path_of(name),
                self.server.as_deref(),
            )?)),
            Some(_) => Err(self.wrong_type(name, "an object")),
        }
    }
}

/// The known key nearest to an unknown one, if it is near enough to be a typo.
pub(crate) fn suggest(unknown: &str, table: &'static [KeySpec]) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    table
        .iter()
        .map(|k| {
            let d = strsim::damerau_levenshtein(&lower, &k.name.to_ascii_lowercase());
            (d, k.name)
        })
        .filter(|(d, name)| *d <= 3.max(name.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{GLOBAL_KEYS, SERVER_KEYS};

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(suggest("ClientSecert", SERVER_KEYS), Some("ClientSecret"));
        assert_eq!(suggest("clientid", SERVER_KEYS), Some("ClientId"));
        assert_eq!(suggest("tokenendpoint", SERVER_KEYS), Some("TokenEndpoint"));
        assert_eq!(suggest("Servres", GLOBAL_KEYS), Some("Servers"));
        assert_eq!(suggest("Completely", SERVER_KEYS), None);
    }
}
