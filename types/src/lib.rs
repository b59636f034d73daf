//! The wire contract of Plinth.
//!
//! Every request and response body that crosses HTTP is declared here, once, and used by both
//! the services and the SDK, so the two cannot drift apart. The crate holds data only: serde
//! derives, and OpenAPI schemas behind the `openapi` feature for the server.
//!
//! - [`error`]: the closed table of public error codes and the error body.
//! - [`scope`]: the scopes an API key or token can carry.
//! - [`console`]: projects, keys, tokens, quotas, usage and audit of the console API.
//! - [`storage`]: buckets and object descriptions of the storage API.
//! - [`messaging`]: topics, publishing and partition reads of the messaging API.
//! - [`search`]: indexes, schemas, documents, queries and hits of the search API.

pub mod console;
pub mod error;
pub mod messaging;
pub mod scope;
pub mod search;
pub mod storage;

pub use error::{ErrorBody, ErrorCode};
pub use scope::Scope;
