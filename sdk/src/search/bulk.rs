//! The bulk loader: documents added one by one, sent as NDJSON imports of a batch each,
//! several in flight, with what the server refused counted among all added.

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use plinth_types::search::{OnError, RejectedDocument, WriteResponse};
use serde::Serialize;

use super::WriteOptions;
use crate::client::Client;
use crate::error::Error;

impl Client {
    /// A loader that sends `index` the documents [`BulkLoader::add`]ed to it, as NDJSON
    /// imports of `options.batch_documents` each, up to `options.in_flight` at once.
    pub fn bulk_loader(&self, index: &str, options: BulkOptions) -> BulkLoader {
        BulkLoader {
            client: self.clone(),
            index: index.to_owned(),
            options,
            batch: Vec::new(),
            batch_start: 0,
            added: 0,
            sending: FuturesUnordered::new(),
            summary: BulkSummary::default(),
        }
    }
}

/// How a [`BulkLoader`] batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkOptions {
    /// Documents per import.
    pub batch_documents: usize,
    /// Bytes of NDJSON per import, at most.
    pub batch_bytes: usize,
    /// Imports in flight at once.
    pub in_flight: usize,
    /// `Skip` (the default here): bad documents are left out and listed; `Refuse`: a bad
    /// document refuses its batch and stops the load.
    pub on_error: OnError,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            batch_documents: 5_000,
            batch_bytes: 8 * 1024 * 1024,
            in_flight: 2,
            on_error: OnError::Skip,
        }
    }
}

/// What a bulk load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkSummary {
    /// Documents sent.
    pub sent: u64,
    /// Documents the server applied.
    pub applied: u64,
    /// Documents left out, with their positions among all that were added (the server
    /// lists at most a thousand per batch).
    pub rejected: Vec<RejectedDocument>,
    /// How many were left out in all.
    pub rejected_total: u64,
}

type Sending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (usize, Result<WriteResponse, Error>)> + Send>,
>;

/// Sends documents in NDJSON batches, several at once; see [`Client::bulk_loader`].
pub struct BulkLoader {
    client: Client,
    index: String,
    options: BulkOptions,
    /// The NDJSON of the batch being filled.
    batch: Vec<u8>,
    /// The position of the batch's first document among all added.
    batch_start: usize,
    added: usize,
    sending: FuturesUnordered<Sending>,
    summary: BulkSummary,
}

impl std::fmt::Debug for BulkLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoader")
            .field("index", &self.index)
            .field("added", &self.added)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl BulkLoader {
    /// Adds a document; sends the batch when it is full, waiting while `in_flight`
    /// imports are under way.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Decode`] when the document does not serialize, and the error of an
    /// import that failed.
    pub async fn add<T: Serialize>(&mut self, document: &T) -> Result<(), Error> {
        let line = serde_json::to_vec(document).map_err(Error::Decode)?;
        self.add_line(&line).await
    }

    /// Adds a document already written as one line of JSON.
    ///
    /// # Errors
    ///
    /// As [`BulkLoader::add`].
    pub async fn add_line(&mut self, line: &[u8]) -> Result<(), Error> {
        let documents = self.added - self.batch_start;
        if documents > 0
            && (documents >= self.options.batch_documents
                || self.batch.len() + line.len() > self.options.batch_bytes)
        {
            self.send_batch().await?;
        }
        self.batch.extend_from_slice(line);
        self.batch.push(b'\n');
        self.added += 1;
        Ok(())
    }

    /// What has been applied so far (of the imports answered).
    pub fn progress(&self) -> &BulkSummary {
        &self.summary
    }

    async fn send_batch(&mut self) -> Result<(), Error> {
        while self.sending.len() >= self.options.in_flight.max(1) {
            self.take_answer().await?;
        }
        let body = std::mem::take(&mut self.batch);
        let start = self.batch_start;
        self.summary.sent += (self.added - start) as u64;
        self.batch_start = self.added;
        let client = self.client.clone();
        let url = client.search_url(&["indexes", &self.index, "documents", "import"]);
        let options = WriteOptions {
            wait: false,
            on_error: self.options.on_error,
        };
        self.sending.push(Box::pin(async move {
            let answer = match url {
                Ok(url) => client.import_body(url, body.into(), options).await,
                Err(err) => Err(err),
            };
            (start, answer)
        }));
        Ok(())
    }

    async fn take_answer(&mut self) -> Result<(), Error> {
        let Some((start, answer)) = self.sending.next().await else {
            return Ok(());
        };
        let answer = answer?;
        self.summary.applied += answer.applied;
        self.summary.rejected_total += answer
            .rejected_total
            .unwrap_or(answer.rejected.len() as u64);
        self.summary
            .rejected
            .extend(answer.rejected.into_iter().map(|mut r| {
                r.position += start;
                r
            }));
        Ok(())
    }

    /// Sends what is left and waits for every import; with `wait`, the last one answers
    /// once everything is searchable.
    ///
    /// # Errors
    ///
    /// Returns the error of an import that failed.
    pub async fn finish(mut self, wait: bool) -> Result<BulkSummary, Error> {
        if self.added > self.batch_start {
            self.send_batch().await?;
        }
        while !self.sending.is_empty() {
            self.take_answer().await?;
        }
        if wait {
            // An empty import that waits: answered once all before it are searchable.
            let url = self
                .client
                .search_url(&["indexes", &self.index, "documents", "import"])?;
            let options = WriteOptions {
                wait: true,
                on_error: self.options.on_error,
            };
            self.client
                .import_body(url, Vec::new().into(), options)
                .await?;
        }
        Ok(self.summary)
    }
}
