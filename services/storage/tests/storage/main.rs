//! The storage API end to end: every scenario on SQLite and PostgreSQL metadata with the
//! file blob store, and on the S3 blob store (the orphan collection is about files only).
//! One test binary, for link time; a module per area.

mod common;

mod access;
mod buckets;
mod listing;
mod multipart;
mod objects;
mod orphans;
