//! The auth, quota and HTTP layer every Plinth service shares.
//!
//! A service crate builds its router on [`Shared`], which holds the one connection to the
//! metadata store and everything derived from it:
//!
//! - [`config`]: the typed configuration (defaults < `plinth.toml` < `PLINTH_*` < flags).
//! - [`store`]: the metadata store on SQLite or PostgreSQL behind one sqlx code path, and its
//!   migrations.
//! - [`projects`], [`keys`]: tenants and their API keys, as rows.
//! - [`auth`]: the bearer-credential extractor ([`auth::Caller`]), access tokens and their
//!   signing keys, resource patterns, and the caches that keep auth off the database.
//! - [`quota`], [`ratelimit`], [`usage`]: exact gauges reserved inside the writer's
//!   transaction, per-key token buckets, and batched usage counters.
//! - [`audit`]: the record of every admin change.
//! - [`error`], [`extract`]: the error type every handler returns and the extractors that turn
//!   bad input into its codes.
//! - [`http`]: the common middleware stack, health, metrics and OpenAPI endpoints, and serving
//!   with graceful shutdown.
//! - `testkit` (feature): temporary stores and the backend matrix for tests.

pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
mod group_commit;
pub mod http;
pub mod ids;
pub mod keys;
pub mod names;
pub mod projects;
pub mod quota;
pub mod ratelimit;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod usage;

mod shared;

pub use error::ApiError;
pub use shared::{AdminToken, OpenError, Shared, resolve_admin_token};
