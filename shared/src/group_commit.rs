//! Group commit of metadata writes on SQLite.
//!
//! SQLite takes one writer at a time, and every commit syncs its log, so writes that each
//! ran their own transaction would queue for one sync apiece. Writes submitted through
//! [`Store::write`](crate::store::Store::write) instead go to one task, which applies every
//! write waiting when it is free in one transaction, each inside its own savepoint (a write
//! that fails is undone alone), commits once, and only then answers them all. While one
//! batch commits, the next one gathers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{Mutex, mpsc};

/// Most writes one transaction carries, so that a burst is acknowledged in slices rather
/// than all at the end.
const MAX_BATCH: usize = 64;

/// What a write does once its transaction has committed (`Ok`) or failed (`Err`, with the
/// reason): hand its result to its caller.
pub(crate) type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A write's work against the shared transaction: whether it applied (if not, its changes
/// are rolled back), and how to answer its caller once the transaction's fate is known. A
/// refusal is answered only then too, since it may rest on an earlier write of the batch.
pub(crate) type Job =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, (bool, Deliver)> + Send>;

/// The handle on the committing task; the task ends when the handle is dropped.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    jobs: mpsc::UnboundedSender<Job>,
    /// Transactions begun so far.
    batches: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the committing task on `pool`, taking `writer` (the store's write lock) for
    /// each transaction.
    pub(crate) fn start(pool: AnyPool, writer: Arc<Mutex<()>>) -> GroupCommit {
        let (jobs, queue) = mpsc::unbounded_channel();
        let batches = Arc::<AtomicU64>::default();
        tokio::spawn(run(pool, writer, queue, batches.clone()));
        GroupCommit { jobs, batches }
    }

    /// Returns how many transactions the task has begun.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Queues a write; `false` when the committing task has ended. A queued write whose
    /// transaction cannot begin is dropped, which its caller sees as a closed reply.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

async fn run(
    pool: AnyPool,
    writer: Arc<Mutex<()>>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        batches.fetch_add(1, Ordering::Relaxed);
        let _turn = writer.lock().await;
        if let Err(err) = apply(&pool, jobs).await {
            tracing::error!(error = %err, "a batch of metadata writes failed");
        }
    }
}

/// Runs one batch. Savepoints are needed only when the transaction carries more than one
/// write; a lone write that fails rolls the whole transaction back.
async fn apply(pool: &AnyPool, jobs: Vec<Job>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let shared = jobs.len() > 1;
    let mut delivers = Vec::with_capacity(jobs.len());
    let mut broken = None;
    'jobs: for job in jobs {
        if shared && let Err(err) = sqlx::query("SAVEPOINT write").execute(&mut *tx).await {
            broken = Some(err);
            break;
        }
        // A panicking write is a bug; it must not take the other writes, or this task,
        // down with it.
        // A panicking job drops its answer, which its caller sees as not applied.
        let (applied, deliver) = match AssertUnwindSafe(job(&mut tx)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(_) => (false, Box::new(drop) as Deliver),
        };
        delivers.push(deliver);
        let ends: &[&'static str] = match (applied, shared) {
            (true, true) => &["RELEASE write"],
            (false, true) => &["ROLLBACK TO write", "RELEASE write"],
            (true, false) => &[],
            (false, false) => {
                let rolled_back = tx.rollback().await;
                for deliver in delivers {
                    deliver(Ok(()));
                }
                return rolled_back;
            }
        };
        for &end in ends {
            if let Err(err) = sqlx::query(end).execute(&mut *tx).await {
                broken = Some(err);
                break 'jobs;
            }
        }
    }
    let committed = match broken {
        // Rolled back at once, rather than when the connection is next used, so that the
        // next writer does not find the database locked.
        Some(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
        None => tx.commit().await,
    };
    let answer = committed.as_ref().map(|_| ()).map_err(ToString::to_string);
    for deliver in delivers {
        deliver(answer.clone());
    }
    committed
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::error::ApiError;
    use crate::store::Store;

    #[tokio::test]
    async fn concurrent_writes_commit_together_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
        let store = Store::open(&url, 8).await.unwrap();
        sqlx::query("CREATE TABLE t (n BIGINT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();

        // Every third write inserts its row and then fails: only its row must go.
        let writes = (0..96i64).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |tx| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (n) VALUES ($1)")
                                .bind(n)
                                .execute(&mut *tx)
                                .await?;
                            if n % 3 == 0 {
                                return Err(ApiError::InvalidParameter(format!("{n}")));
                            }
                            let seen: i64 = sqlx::query("SELECT COUNT(*) AS c FROM t")
                                .fetch_one(&mut *tx)
                                .await?
                                .try_get("c")?;
                            Ok(seen)
                        })
                    })
                    .await
            })
        });
        let results = futures::future::join_all(writes).await;
        for (n, result) in results.into_iter().enumerate() {
            match result.unwrap() {
                Ok(seen) => {
                    assert_ne!(n % 3, 0, "write {n} should have failed");
                    assert!(seen >= 1);
                }
                Err(ApiError::InvalidParameter(text)) => assert_eq!(text, n.to_string()),
                Err(other) => panic!("write {n}: {other}"),
            }
        }
        let rows: Vec<i64> = sqlx::query("SELECT n FROM t ORDER BY n")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get("n").unwrap())
            .collect();
        let expected: Vec<i64> = (0..96).filter(|n| n % 3 != 0).collect();
        assert_eq!(rows, expected);
        let batches = store.group_commits().unwrap();
        eprintln!("96 concurrent writes took {batches} transactions");
        assert!(
            batches < 96,
            "no two of 96 concurrent writes shared a transaction"
        );
    }
}
