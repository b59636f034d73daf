//! Secrets in the configuration: a type that never prints, and reading one from its value or
//! its file.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A secret value: never printed, never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Shortest admin token accepted: guessing one must stay out of reach.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

pub(super) fn check_admin_token(token: &Secret) -> Result<(), ConfigError> {
    let token = token.expose();
    if token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace()) {
        return Err(ConfigError::Value {
            key: "admin_token",
            reason: format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters, without spaces"),
        });
    }
    if token.starts_with(crate::auth::secret::KEY_PREFIX) {
        return Err(ConfigError::Value {
            key: "admin_token",
            reason: "must not look like an API key (`plinth_sk_...`)".into(),
        });
    }
    Ok(())
}

pub(super) fn read_secret(
    key: &'static str,
    value: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(value) = value {
        return Ok(Some(value.clone()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.clone(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::Value {
            key,
            reason: format!("file {} is empty", path.display()),
        });
    }
    Ok(Some(Secret::new(text)))
}
