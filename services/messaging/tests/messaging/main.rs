//! The messaging API end to end on the embedded log: every scenario on SQLite and PostgreSQL
//! metadata. One test binary, for link time; a module per area.

mod common;

mod dedup;
mod notifications;
mod publish;
mod push;
mod replicas;
mod stream;
mod subscriptions;
mod topics;
