//! Secrets that cannot be printed and are wiped from memory when dropped.
//!
//! Client secrets, private keys and tokens live in [`Secret`]. Its `Debug` and
//! `Display` print `[REDACTED]`, so a secret cannot reach a log line, an error
//! body or a panic message through formatting; reading the value takes an
//! explicit, greppable [`Secret::expose`]. The memory is zeroized on drop (by
//! the `secrecy` crate).

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// What every redacted value prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string: a client secret, a private key (PEM) or a token.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret value; call only where it must go on the wire.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl PartialEq for Secret {
    /// Compares in constant time with respect to content, so comparing a
    /// secret (e.g. a cache key) does not leak its prefix through timing.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.expose().as_bytes(), other.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s:#?}"), REDACTED);
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
    }
}
