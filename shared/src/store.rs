//! The metadata store: SQLite or PostgreSQL behind one sqlx code path.
//!
//! Queries are written once against sqlx's `Any` driver with `$n` placeholders, which both
//! engines accept, and only portable SQL (`ON CONFLICT`, no engine-specific types: times are
//! `BIGINT` milliseconds, lists are JSON text). Each engine has its own migration directory so
//! that a later schema change can diverge where it must.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

use crate::error::ApiError;
use crate::group_commit::{Deliver, GroupCommit, Job};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// A write transaction on the metadata store; it derefs to its connection.
///
/// Dropped without a commit or a rollback (an early return on an error), it is rolled back
/// on a task of its own that holds this process's SQLite write turn until the rollback has
/// run: left to sqlx, the rollback would wait until the connection's next use, and the next
/// writer would find the database locked and sleep in SQLite's busy handler.
#[derive(Debug)]
pub struct Tx {
    /// `None` only once committed or rolled back, which consumes the `Tx`.
    inner: Option<Transaction<'static, Any>>,
    /// On SQLite, this process's turn to write, held until the transaction ends.
    turn: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    /// Commits the transaction.
    ///
    /// # Errors
    ///
    /// Returns the driver's error; nothing of the transaction is then applied.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match self.inner.take() {
            Some(inner) => inner.commit().await,
            None => Ok(()),
        }
    }

    /// Rolls the transaction back.
    ///
    /// # Errors
    ///
    /// Returns the driver's error.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        match self.inner.take() {
            Some(inner) => inner.rollback().await,
            None => Ok(()),
        }
    }

    fn open(&self) -> &Transaction<'static, Any> {
        self.inner
            .as_ref()
            .expect("a Tx is open until commit or rollback consumes it")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let (Some(inner), Some(turn)) = (self.inner.take(), self.turn.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = inner.rollback().await;
                drop(turn);
            });
        }
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        self.open()
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.inner
            .as_mut()
            .expect("a Tx is open until commit or rollback consumes it")
    }
}

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Returns the backend a URL names, if it names one.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    /// Returns the backend's name, as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A failure to open or migrate the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`database_url` must start with sqlite:// or postgres://")]
    UnknownScheme,
    #[error("cannot create the directory of the SQLite file: {0}")]
    CreateDir(#[source] std::io::Error),
    #[error("cannot connect to the metadata store: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the metadata store: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// A handle on the metadata store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises this process's SQLite writers; see [`Store::begin`].
    writer: Arc<Mutex<()>>,
    /// On SQLite, the task that applies [`Store::write`]s in shared transactions.
    group: Option<Arc<GroupCommit>>,
}

impl Store {
    /// Connects to the store at `url` and brings its schema up to date.
    ///
    /// # Errors
    ///
    /// Returns an error when the URL names no known engine, the server cannot be reached, or
    /// a migration fails.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or(StoreError::UnknownScheme)?;
        if backend == Backend::Sqlite {
            create_sqlite_dir(url)?;
        }
        let options = AnyConnectOptions::from_str(url).map_err(StoreError::Connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A pooled SQLite connection is an open file and cannot go stale, so the ping
            // before each use would only add a round trip to its worker thread on every
            // request; a server connection can drop, so it is still checked.
            .test_before_acquire(backend != Backend::Sqlite)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; FULL syncs every commit,
                        // so an acknowledged change survives a crash; the busy timeout makes
                        // writers queue instead of failing while another one commits.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(StoreError::Migrate)?;
        let writer = Arc::<Mutex<()>>::default();
        let group = (backend == Backend::Sqlite)
            .then(|| Arc::new(GroupCommit::start(pool.clone(), writer.clone())));
        Ok(Store {
            pool,
            backend,
            writer,
            group,
        })
    }

    /// Returns the engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Returns the connection pool, for reads outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a deferred transaction
    /// that reads first and writes later can fail with `SQLITE_BUSY` when another writer
    /// commits in between, where an immediate one simply waits its turn.
    ///
    /// SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    /// its busy handler for 1 ms, then 2, 5, 10 and more before it looks again, so under load
    /// most of a writer's time would be spent asleep beside an idle lock. This process's
    /// writers therefore queue first on an in-process lock, in order, and each begins only
    /// when the previous one has ended; the busy timeout is left for other processes on the
    /// same file. On PostgreSQL, writers run concurrently and queue on the rows they touch.
    ///
    /// # Errors
    ///
    /// Returns the driver's error when no connection can be had.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.writer.clone().lock_owned().await;
                let inner = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(Tx {
                    inner: Some(inner),
                    turn: Some(turn),
                })
            }
            Backend::Postgres => Ok(Tx {
                inner: Some(self.pool.begin().await?),
                turn: None,
            }),
        }
    }

    /// Runs `work` in a write transaction and returns its result once that has committed.
    ///
    /// On SQLite the transaction may be shared with other writes that arrived at the same
    /// time, so that they share one commit and its sync (see the `group_commit` module):
    /// `work` sees their changes, runs in a savepoint of its own, and if it fails only its
    /// changes are undone. `work` runs on a task of the store's, so it is not abandoned if
    /// the caller is; it must not begin another transaction. On PostgreSQL it runs in a
    /// transaction of its own, on the caller's task.
    ///
    /// # Errors
    ///
    /// Returns the error of `work`, or the store's when the transaction cannot begin or
    /// commit; nothing of `work` is then applied.
    pub async fn write<T, W>(&self, work: W) -> Result<T, ApiError>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, ApiError>>
            + Send
            + 'static,
    {
        let Some(group) = &self.group else {
            let mut tx = self.begin().await?;
            let value = work(&mut tx).await?;
            tx.commit().await?;
            return Ok(value);
        };
        let (reply, answer) = oneshot::channel::<Result<T, ApiError>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let outcome = work(conn).await;
                let applied = outcome.is_ok();
                let deliver: Deliver = Box::new(move |committed| {
                    // A refusal stands only if the batch it was judged in committed.
                    let result = match committed {
                        Ok(()) => outcome,
                        Err(reason) => Err(ApiError::internal(format!(
                            "metadata commit failed: {reason}"
                        ))),
                    };
                    let _ = reply.send(result);
                });
                (applied, deliver)
            })
        });
        let not_applied = || ApiError::internal("the metadata write was not applied");
        if !group.submit(job) {
            return Err(not_applied());
        }
        answer.await.map_err(|_| not_applied())?
    }

    /// Returns how many transactions group commit has run for [`Store::write`]: `None`
    /// on PostgreSQL, where each write has its own.
    pub fn group_commits(&self) -> Option<u64> {
        self.group.as_ref().map(|group| group.batches())
    }

    /// Checks that the store answers.
    ///
    /// # Errors
    ///
    /// Returns the driver's error when it does not.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Returns whether `err` is a unique-constraint violation, in either engine.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

fn create_sqlite_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(StoreError::CreateDir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::Store;

    #[tokio::test]
    async fn a_dropped_transaction_is_rolled_back_before_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
        let store = Store::open(&url, 2).await.unwrap();
        sqlx::query("CREATE TABLE t (n BIGINT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .unwrap();
        // Both connections of the pool stop waiting for a locked database: a writer that
        // began while the abandoned transaction still held SQLite's lock would fail.
        let mut first = store.pool().acquire().await.unwrap();
        let mut second = store.pool().acquire().await.unwrap();
        for conn in [&mut first, &mut second] {
            sqlx::query("PRAGMA busy_timeout = 0")
                .execute(&mut **conn)
                .await
                .unwrap();
        }
        drop((first, second));

        let mut abandoned = store.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (1)")
            .execute(&mut *abandoned)
            .await
            .unwrap();
        drop(abandoned);

        // The next writer gets its turn only once the rollback has run, so SQLite's lock is
        // free when it begins.
        let mut next = store.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (2)")
            .execute(&mut *next)
            .await
            .unwrap();
        next.commit().await.unwrap();

        let rows: Vec<i64> = sqlx::query("SELECT n FROM t")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get("n").unwrap())
            .collect();
        assert_eq!(rows, [2]);
    }

    /// The bundled SQLite is built with the query planner stability guarantee (set in
    /// `.cargo/config.toml`); without it every join and `LIMIT $n` re-prepares its statement
    /// on each execution.
    #[tokio::test]
    async fn sqlite_is_built_with_the_planner_stability_guarantee() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
        let store = Store::open(&url, 1).await.unwrap();
        let options: Vec<String> = sqlx::query("PRAGMA compile_options")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect();
        assert!(
            options.iter().any(|option| option == "ENABLE_QPSG"),
            "SQLite compile options lack ENABLE_QPSG: {options:?}"
        );
    }
}
