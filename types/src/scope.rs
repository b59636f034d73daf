//! The scopes an API key or access token can carry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A permission a credential grants. On the wire a scope is its `service:verb` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    /// Read objects and list buckets.
    #[serde(rename = "storage:read")]
    StorageRead,
    /// Create, overwrite and delete objects and buckets.
    #[serde(rename = "storage:write")]
    StorageWrite,
    /// Publish messages to topics.
    #[serde(rename = "messaging:publish")]
    MessagingPublish,
    /// Consume from subscriptions.
    #[serde(rename = "messaging:consume")]
    MessagingConsume,
    /// Query indexes.
    #[serde(rename = "search:read")]
    SearchRead,
    /// Write documents and manage indexes.
    #[serde(rename = "search:write")]
    SearchWrite,
    /// Manage the key's own project through the console API.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: &'static [Scope] = &[
        Scope::StorageRead,
        Scope::StorageWrite,
        Scope::MessagingPublish,
        Scope::MessagingConsume,
        Scope::SearchRead,
        Scope::SearchWrite,
        Scope::Admin,
    ];

    /// Returns the scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StorageRead => "storage:read",
            Scope::StorageWrite => "storage:write",
            Scope::MessagingPublish => "messaging:publish",
            Scope::MessagingConsume => "messaging:consume",
            Scope::SearchRead => "search:read",
            Scope::SearchWrite => "search:write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownScope(pub String);

impl fmt::Display for UnknownScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown scope `{}`", self.0)
    }
}

impl std::error::Error for UnknownScope {}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .iter()
            .copied()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_display_and_parse() {
        for scope in Scope::ALL {
            let json = serde_json::to_string(scope).unwrap();
            assert_eq!(json, format!("\"{scope}\""));
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), *scope);
        }
        assert!("storage:admin".parse::<Scope>().is_err());
    }
}
