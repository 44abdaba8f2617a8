//! [`Secret`]: a credential that can be passed around and formatted without leaking.

use std::fmt;

/// A secret (API key, token, password). `Debug` and `Display` print `***`; only
/// [`Secret::expose`] gives the value, at the one place it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value given directly (tests, embedding).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the variable `name`; the error names the variable, never a value.
    pub fn from_env(name: &str, what: &str) -> anyhow::Result<Self> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Self(v.trim().to_string())),
            _ => anyhow::bail!("{what}: environment variable {name} is not set"),
        }
    }

    /// The value, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }
}
