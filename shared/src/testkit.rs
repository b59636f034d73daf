//! Test helpers: a fresh backend per test, on SQLite always and on PostgreSQL when
//! `PLINTH_TEST_POSTGRES_URL` points at a server.
//!
//! Scenarios are written once as `async fn name(backend: TestBackend)` and listed in
//! [`backend_tests!`](crate::backend_tests), which makes one test per scenario and backend.
//! Without the variable the PostgreSQL tests pass after saying loudly, once per test binary,
//! that they did not run; CI always sets it.

use std::io::Write;
use std::sync::Once;

use sqlx::Connection;
use tempfile::TempDir;

use crate::config::{Config, Secret};
use crate::ids::random_hex;
use crate::store::Store;

/// The variable naming the PostgreSQL server tests use.
pub const POSTGRES_ENV: &str = "PLINTH_TEST_POSTGRES_URL";

/// The variable naming the Kafka-compatible brokers (`HOST:PORT,...`) tests use.
pub const KAFKA_ENV: &str = "PLINTH_TEST_KAFKA_BROKERS";

/// The variable naming the S3 endpoint tests use; its access key and secret come from
/// `PLINTH_TEST_S3_ACCESS_KEY_ID` and `PLINTH_TEST_S3_SECRET_ACCESS_KEY`, its bucket from
/// `PLINTH_TEST_S3_BUCKET` (default `plinth-test`).
pub const S3_ENV: &str = "PLINTH_TEST_S3_ENDPOINT";

/// The S3 server of the tests, when one is configured.
#[derive(Clone, Debug)]
pub struct TestS3 {
    /// Endpoint URL.
    pub endpoint: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
    /// Bucket, shared by the tests; each test has its own key prefix in it.
    pub bucket: String,
}

impl TestS3 {
    /// Reads the S3 test server from the environment, or says (once) that there is none.
    pub fn from_env() -> Option<TestS3> {
        let Ok(endpoint) = std::env::var(S3_ENV) else {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTE: the S3 blob store was not tested: set {S3_ENV} to run these tests on it"
                );
            });
            return None;
        };
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Some(TestS3 {
            endpoint,
            access_key_id: var("PLINTH_TEST_S3_ACCESS_KEY_ID", ""),
            secret_access_key: var("PLINTH_TEST_S3_SECRET_ACCESS_KEY", ""),
            bucket: var("PLINTH_TEST_S3_BUCKET", "plinth-test"),
        })
    }
}

/// One backend for one test: a configuration with its own database and data directory.
#[derive(Debug)]
pub struct TestBackend {
    /// `sqlite` or `postgres`.
    pub name: &'static str,
    /// A configuration using that backend, with a random admin token.
    pub config: Config,
    /// The admin token of `config`.
    pub admin_token: String,
    /// The data directory, removed when the test ends.
    pub dir: TempDir,
}

impl TestBackend {
    /// A fresh SQLite database in a temporary directory.
    pub fn sqlite() -> TestBackend {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("plinth.db").display()
        );
        TestBackend::with(dir, "sqlite", url)
    }

    /// A fresh database on the PostgreSQL server of `PLINTH_TEST_POSTGRES_URL`, or `None`
    /// (after saying so on stderr) when the variable is not set.
    ///
    /// # Panics
    ///
    /// Panics when the variable is set but the server cannot be used: a configured backend
    /// that fails is a failed test, never a skipped one.
    pub async fn postgres() -> Option<TestBackend> {
        let Ok(server) = std::env::var(POSTGRES_ENV) else {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                // Written past the test harness's capture, so it shows in every run.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTE: PostgreSQL was not tested: set {POSTGRES_ENV} to run these tests on it"
                );
            });
            return None;
        };
        let name = format!("plinth_test_{}", random_hex(8));
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|err| panic!("{POSTGRES_ENV}={server} cannot be reached: {err}"));
        // An ICU English collation, as a cluster made with a usual locale has, rather than the
        // byte order of a bare `initdb`: ordering bugs must show up in tests.
        let create = format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
             LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        );
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let mut url = url::Url::parse(&server).expect("PLINTH_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        let dir = tempfile::tempdir().expect("temporary directory");
        Some(TestBackend::with(dir, "postgres", url.to_string()))
    }

    /// A fresh SQLite database with object bytes in the S3 test bucket (under a key prefix
    /// of its own), or `None` when no S3 server is configured.
    pub fn s3() -> Option<(TestBackend, TestS3)> {
        let s3 = TestS3::from_env()?;
        let mut backend = TestBackend::sqlite();
        backend.name = "s3";
        backend.config.storage_url = Some(format!("s3://{}/{}/", s3.bucket, random_hex(8)));
        backend.config.storage_s3_endpoint = Some(s3.endpoint.clone());
        backend.config.storage_s3_path_style = true;
        backend.config.storage_s3_access_key_id = Some(s3.access_key_id.clone());
        backend.config.storage_s3_secret_access_key =
            Some(Secret::new(s3.secret_access_key.clone()));
        Some((backend, s3))
    }

    /// SQLite metadata with messages on the Kafka-compatible broker of
    /// `PLINTH_TEST_KAFKA_BROKERS`, or `None` (after saying so on stderr) without one. Each
    /// test's topics have their own Kafka topics, so tests share the broker.
    pub fn kafka() -> Option<TestBackend> {
        let Ok(brokers) = std::env::var(KAFKA_ENV) else {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTE: the Kafka message log was not tested: set {KAFKA_ENV} to run these tests on it"
                );
            });
            return None;
        };
        let mut backend = TestBackend::sqlite();
        backend.name = "kafka";
        backend.config.messaging_url = Some(format!("kafka://{brokers}"));
        // One broker: one replica. The tests' broker (Tansu) gets offsets wrong.
        backend.config.messaging_kafka_replication = 1;
        backend.config.messaging_kafka_verify_offsets = true;
        // Kafka's shortest by default; a join then takes about three seconds on Tansu.
        backend.config.messaging_kafka_session_timeout = std::time::Duration::from_secs(6);
        Some(backend)
    }

    fn with(dir: TempDir, name: &'static str, database_url: String) -> TestBackend {
        let admin_token = format!("test-admin-{}", random_hex(16));
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(database_url),
            admin_token: Some(Secret::new(admin_token.clone())),
            ..Config::default()
        };
        TestBackend {
            name,
            config,
            admin_token,
            dir,
        }
    }

    /// Opens the backend's metadata store.
    ///
    /// # Panics
    ///
    /// Panics when the store cannot be opened.
    pub async fn store(&self) -> Store {
        Store::open(&self.config.database_url(), 16)
            .await
            .expect("open the test store")
    }
}

/// Makes one test per scenario and backend: `mod sqlite { fn NAME }` and
/// `mod postgres { fn NAME }`, each calling `NAME(backend)` with a fresh backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testkit::TestBackend::sqlite()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::testkit::TestBackend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

/// Makes one test per scenario on every backend: SQLite and PostgreSQL metadata
/// ([`backend_tests!`]) and the S3 blob store ([`s3_tests!`]), from one list.
#[macro_export]
macro_rules! all_backend_tests {
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!($($name),*);
        $crate::s3_tests!($($name),*);
    };
}

/// Makes one test per scenario on SQLite and PostgreSQL metadata with the embedded log
/// ([`backend_tests!`]) and on the Kafka message log (`mod kafka { fn NAME }`, with SQLite
/// metadata; each passes after saying so when no broker is configured), from one list.
#[macro_export]
macro_rules! log_backend_tests {
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!($($name),*);
        mod kafka {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::testkit::TestBackend::kafka() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

/// Makes one test per scenario on the S3 blob store (`mod s3 { fn NAME }`), with SQLite
/// metadata; each passes after saying so when no S3 server is configured.
#[macro_export]
macro_rules! s3_tests {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some((backend, _)) = $crate::testkit::TestBackend::s3() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
