//! The Rust client of Plinth, for functions and admin tools.
//!
//! A [`Client`] holds a deployment's URL and one bearer credential, and turns each API route
//! into an `async` method that returns the typed bodies of [`plinth_types`] (re-exported as
//! [`types`]) or an [`Error`].
//!
//! - `builder`: configuration, from code or from the environment.
//! - `client`: URL building, and the send loop.
//! - `retry`: which failures are retried, and the backoff between attempts.
//! - `error`: the error type, and how an error response becomes one.
//! - `console`: the console API methods (projects, keys, tokens, quotas, usage, audit and
//!   signing keys), all on [`Client`].
//! - `storage`: the storage API methods (buckets, uploads, downloads, listings, signed URLs),
//!   also on [`Client`], with the [`PutOptions`] of an upload and the [`ObjectHead`] of a read.
//! - `messaging`: the messaging API methods (topics, publish, partition reads, subscriptions,
//!   pull, ack, nack, extend, seek, dead letters, redrive, push attempts) and
//!   [`Client::consume`], a consumer loop.
//! - `search`: the search API methods (indexes, documents, imports, searches) with typed
//!   documents, the [`Query`] builder and its [`Filter`]s, and the [`BulkLoader`].
//! - [`push`]: for a function behind a push subscription: verify a request's signature and
//!   read its CloudEvent.

mod builder;
mod client;
mod console;
mod error;
mod messaging;
pub mod push;
mod retry;
mod search;
mod storage;

pub use plinth_types as types;

pub use crate::builder::{ClientBuilder, DEFAULT_URL};
pub use crate::client::Client;
pub use crate::error::Error;
pub use crate::messaging::{ConsumerOptions, ReadFrom};
pub use crate::search::{
    BulkLoader, BulkOptions, BulkSummary, Filter, Query, SearchHit, SearchPage, WriteOptions,
};
pub use crate::storage::{Checksum, MultipartOptions, ObjectHead, PartSent, PutOptions};
