//! The search service's scenarios, each run on SQLite and on PostgreSQL metadata.

mod bulk;
mod common;
mod documents;
mod indexes;
mod many;
mod queries;
mod results;
mod tenants;
mod usage;
