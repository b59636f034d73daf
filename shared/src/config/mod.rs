//! The typed configuration: defaults < `plinth.toml` < `PLINTH_*` environment < flags.
//!
//! Every key is documented once, on its field; the README's reference is this list. Nested
//! keys use `__` in the environment (`PLINTH_QUOTAS__STORED_BYTES`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use plinth_types::console::Quotas;
use serde::{Deserialize, Serialize};

/// The writer memory one open index writer takes from `search_writer_memory_bytes`.
pub const SEARCH_WRITER_SHARE: usize = 32 * 1024 * 1024;

/// `PLINTH_*` variables that belong to clients and tests, not to the server's configuration.
const CLIENT_ENV_KEYS: &[&str] = &["url", "token", "config"];

/// Where messages live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessagingBackend {
    /// The embedded log, one directory per partition under this one.
    File(PathBuf),
    /// A Kafka cluster, by its bootstrap brokers (`host:port,host:port`).
    Kafka(String),
}

/// Where object bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageBackend {
    /// Files in a directory.
    File(PathBuf),
    /// An S3 bucket, under a key prefix (empty, or ending in `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The server's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`PLINTH_LISTEN`).
    pub listen: SocketAddr,
    /// Directory for the embedded backends and generated secrets (`PLINTH_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Metadata store: `sqlite://PATH` or `postgres://...`; default SQLite under `data_dir`
    /// (`PLINTH_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Largest pool of metadata-store connections (`PLINTH_DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// Object bytes: `file://DIR`; default `file://<data_dir>/blobs` (`PLINTH_STORAGE_URL`).
    pub storage_url: Option<String>,
    /// Largest object accepted when no quota or bucket setting is lower, in bytes
    /// (`PLINTH_STORAGE_MAX_OBJECT_BYTES`).
    pub storage_max_object_bytes: u64,
    /// S3 endpoint for `s3://` storage, e.g. `http://127.0.0.1:8333`; AWS when absent
    /// (`PLINTH_STORAGE_S3_ENDPOINT`).
    pub storage_s3_endpoint: Option<String>,
    /// S3 region (`PLINTH_STORAGE_S3_REGION`).
    pub storage_s3_region: String,
    /// Address buckets by path (`endpoint/bucket/key`) rather than by host, as MinIO,
    /// SeaweedFS and Garage expect (`PLINTH_STORAGE_S3_PATH_STYLE`).
    pub storage_s3_path_style: bool,
    /// S3 access key id; the AWS default credential chain when absent
    /// (`PLINTH_STORAGE_S3_ACCESS_KEY_ID`).
    pub storage_s3_access_key_id: Option<String>,
    /// S3 secret key (`PLINTH_STORAGE_S3_SECRET_ACCESS_KEY`).
    pub storage_s3_secret_access_key: Option<Secret>,
    /// A file holding the S3 secret key (`PLINTH_STORAGE_S3_SECRET_ACCESS_KEY_FILE`).
    pub storage_s3_secret_access_key_file: Option<PathBuf>,
    /// How long a multipart upload may stay incomplete before it and its parts are deleted
    /// (`PLINTH_STORAGE_UPLOAD_EXPIRY`).
    #[serde(with = "humantime_serde")]
    pub storage_upload_expiry: Duration,
    /// Smallest part of a multipart upload other than the last, in bytes
    /// (`PLINTH_STORAGE_MIN_PART_BYTES`); S3's 5 MiB by default.
    pub storage_min_part_bytes: u64,
    /// Where messages live (`PLINTH_MESSAGING_URL`): `file://DIR` (default: `messages/` in the
    /// data directory) or `kafka://HOST:PORT[,HOST:PORT...]`.
    pub messaging_url: Option<String>,
    /// Largest message value accepted when no quota is lower, in bytes
    /// (`PLINTH_MESSAGING_MAX_MESSAGE_BYTES`).
    pub messaging_max_message_bytes: u64,
    /// Most partitions a topic may have (`PLINTH_MESSAGING_MAX_PARTITIONS`).
    pub messaging_max_partitions: u32,
    /// The embedded log starts a new segment file past this many bytes
    /// (`PLINTH_MESSAGING_SEGMENT_BYTES`); retention deletes whole segments.
    pub messaging_segment_bytes: u64,
    /// Addresses and networks that push endpoints may reach although they are loopback,
    /// private or link-local, such as `["10.1.0.0/16"]` for functions on the operator's own
    /// network (`PLINTH_MESSAGING_PUSH_ALLOW`); none by default.
    pub messaging_push_allow: Vec<String>,
    /// Replicas of each Kafka topic the Kafka backend creates; -1 takes the brokers'
    /// `default.replication.factor` (`PLINTH_MESSAGING_KAFKA_REPLICATION`).
    pub messaging_kafka_replication: i32,
    /// Check the Kafka brokers' answers about offsets (a partition's end, the offset for a
    /// time) by reading records, for brokers that get them wrong, such as Tansu's memory
    /// engine (`PLINTH_MESSAGING_KAFKA_VERIFY_OFFSETS`); costs a read per check.
    pub messaging_kafka_verify_offsets: bool,
    /// How long a replica that stopped answering Kafka keeps its share of a subscription's
    /// partitions: the consumer groups' `session.timeout.ms`
    /// (`PLINTH_MESSAGING_KAFKA_SESSION_TIMEOUT`). Brokers accept 6s to 30s by default.
    #[serde(with = "humantime_serde")]
    pub messaging_kafka_session_timeout: Duration,
    /// How long a replica stays in a subscription's consumer group after its last delivery
    /// there (`PLINTH_MESSAGING_KAFKA_GROUP_IDLE`): the partitions it holds are fetched by no
    /// other replica meanwhile.
    #[serde(with = "humantime_serde")]
    pub messaging_kafka_group_idle: Duration,
    /// How long a producer's `message_id` is remembered per topic: a message published again
    /// with it within this time is not stored twice (`PLINTH_MESSAGING_DEDUP_WINDOW`).
    #[serde(with = "humantime_serde")]
    pub messaging_dedup_window: Duration,
    /// Where the search indexes live, one directory each (`PLINTH_SEARCH_DIR`); default
    /// `<data_dir>/search`.
    pub search_dir: Option<PathBuf>,
    /// How soon a write is searchable when it does not wait for it: readers are reloaded at
    /// most this often (`PLINTH_SEARCH_REFRESH_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub search_refresh_interval: Duration,
    /// How long an index nobody uses stays open (`PLINTH_SEARCH_IDLE_TIMEOUT`); closing it
    /// frees its reader's memory and files, and it opens again on the next request.
    #[serde(with = "humantime_serde")]
    pub search_idle_timeout: Duration,
    /// The most indexes kept open at once (`PLINTH_SEARCH_MAX_OPEN_INDEXES`); past it, the
    /// least recently used index not in use is closed.
    pub search_max_open_indexes: usize,
    /// The memory all index writers may buffer together (`PLINTH_SEARCH_WRITER_MEMORY_BYTES`);
    /// each open writer takes 32 MiB of it, and an index waits for a share before it writes.
    pub search_writer_memory_bytes: usize,
    /// How many threads one search spreads an index's segments over
    /// (`PLINTH_SEARCH_QUERY_THREADS`); the threads are shared by every search. Defaults to
    /// the machine's cores, at most 8.
    pub search_query_threads: usize,
    /// How long an index writer with nothing to write keeps its share of the writer memory
    /// (`PLINTH_SEARCH_WRITER_IDLE`).
    #[serde(with = "humantime_serde")]
    pub search_writer_idle: Duration,
    /// The operator's admin token (`PLINTH_ADMIN_TOKEN`); generated on first start if neither
    /// it nor `admin_token_file` is set.
    pub admin_token: Option<Secret>,
    /// A file holding the admin token (`PLINTH_ADMIN_TOKEN_FILE`).
    pub admin_token_file: Option<PathBuf>,
    /// Encrypts the token-signing private keys at rest (`PLINTH_MASTER_KEY`).
    pub master_key: Option<Secret>,
    /// A file holding the master key (`PLINTH_MASTER_KEY_FILE`).
    pub master_key_file: Option<PathBuf>,
    /// `human` or `json` (`PLINTH_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `plinth_shared=debug` (`PLINTH_LOG_LEVEL`).
    pub log_level: String,
    /// Longest time a request may take before it gets 408 (`PLINTH_REQUEST_TIMEOUT`, e.g. "30s").
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest JSON body accepted, in bytes (`PLINTH_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Origins allowed by CORS; `["*"]` allows any, empty allows none (`PLINTH_CORS_ORIGINS`).
    pub cors_origins: Vec<String>,
    /// Time in-flight requests get to finish on shutdown (`PLINTH_SHUTDOWN_GRACE`).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `iss` of minted access tokens (`PLINTH_TOKEN_ISSUER`).
    pub token_issuer: String,
    /// `aud` of minted access tokens, and the only audience accepted (`PLINTH_TOKEN_AUDIENCE`).
    pub token_audience: String,
    /// Lifetime of a token when the request names none (`PLINTH_TOKEN_TTL`).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Longest lifetime a token may ask for (`PLINTH_TOKEN_TTL_MAX`).
    #[serde(with = "humantime_serde")]
    pub token_ttl_max: Duration,
    /// How long a key's state is cached by each replica; a revoked key stops working within
    /// this time everywhere (`PLINTH_AUTH_CACHE_TTL`).
    #[serde(with = "humantime_serde")]
    pub auth_cache_ttl: Duration,
    /// How often usage counters are written to the store (`PLINTH_USAGE_FLUSH_INTERVAL`).
    #[serde(with = "humantime_serde")]
    pub usage_flush_interval: Duration,
    /// Default quotas of every project; absent means unlimited (`PLINTH_QUOTAS__<NAME>`).
    pub quotas: Quotas,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_max_connections: 16,
            storage_url: None,
            storage_max_object_bytes: 5 * 1024 * 1024 * 1024 * 1024,
            storage_s3_endpoint: None,
            storage_s3_region: "us-east-1".into(),
            storage_s3_path_style: true,
            storage_s3_access_key_id: None,
            storage_s3_secret_access_key: None,
            storage_s3_secret_access_key_file: None,
            storage_upload_expiry: Duration::from_secs(24 * 60 * 60),
            storage_min_part_bytes: 5 * 1024 * 1024,
            messaging_url: None,
            messaging_max_message_bytes: 256 * 1024,
            messaging_max_partitions: 64,
            messaging_segment_bytes: 64 * 1024 * 1024,
            messaging_push_allow: Vec::new(),
            messaging_kafka_replication: -1,
            messaging_kafka_verify_offsets: false,
            messaging_kafka_session_timeout: Duration::from_secs(10),
            messaging_kafka_group_idle: Duration::from_secs(30),
            messaging_dedup_window: Duration::from_secs(5 * 60),
            search_dir: None,
            search_refresh_interval: Duration::from_secs(1),
            search_idle_timeout: Duration::from_secs(5 * 60),
            search_max_open_indexes: 512,
            search_writer_memory_bytes: 512 * 1024 * 1024,
            search_query_threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(8),
            search_writer_idle: Duration::from_secs(2),
            admin_token: None,
            admin_token_file: None,
            master_key: None,
            master_key_file: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            request_timeout: Duration::from_secs(30),
            body_limit_bytes: 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            token_issuer: "plinth".into(),
            token_audience: "plinth".into(),
            token_ttl: Duration::from_secs(15 * 60),
            token_ttl_max: Duration::from_secs(24 * 60 * 60),
            auth_cache_ttl: Duration::from_secs(2),
            usage_flush_interval: Duration::from_secs(5),
            quotas: Quotas::default(),
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("configuration: `{0}` and `{0}_file` are both set; choose one")]
    BothSecretSources(&'static str),
    #[error("configuration: cannot read `{key}` from {}: {source}", path.display())]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration: `{key}` {reason}")]
    Value { key: &'static str, reason: String },
}

impl Config {
    /// Loads the configuration from `file` (or `./plinth.toml` when present), the `PLINTH_*`
    /// environment, then `flags` (any serializable map of keys to values; absent keys are
    /// left alone).
    ///
    /// # Errors
    ///
    /// Returns an error naming the key for an unknown key, a value of the wrong type, both
    /// sources of one secret, or an unusable value.
    pub fn load(file: Option<&Path>, flags: impl Serialize) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("plinth.toml").exists() => {
                figment = figment.merge(Toml::file_exact("plinth.toml"))
            }
            None => {}
        }
        let config: Config = figment
            .merge(server_env())
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Builds a configuration from `PLINTH_*` variables given as pairs, over the defaults:
    /// what a deployment file (compose, a unit file) passes, checked without touching the
    /// process environment. Other variables are ignored.
    ///
    /// # Errors
    ///
    /// Returns an error naming the key for an unknown key or a bad value.
    pub fn from_env_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("PLINTH_") else {
                continue;
            };
            let path = key.to_ascii_lowercase().replace("__", ".");
            // Parsed the way the environment provider parses values: numbers, booleans,
            // arrays where they look like them, strings otherwise.
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::default(&path, value));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules the types cannot express.
    ///
    /// # Errors
    ///
    /// Returns the first broken rule, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_token.is_some() && self.admin_token_file.is_some() {
            return Err(ConfigError::BothSecretSources("admin_token"));
        }
        if self.master_key.is_some() && self.master_key_file.is_some() {
            return Err(ConfigError::BothSecretSources("master_key"));
        }
        if let Some(token) = &self.admin_token {
            check_admin_token(token)?;
        }
        if let Some(url) = &self.database_url {
            let known = ["sqlite:", "postgres:", "postgresql:"];
            if !known.iter().any(|scheme| url.starts_with(scheme)) {
                return Err(ConfigError::Value {
                    key: "database_url",
                    reason: "must start with sqlite://, postgres:// or postgresql://".into(),
                });
            }
        }
        self.storage_backend()?;
        self.messaging_backend()?;
        // Bounded so that a message with its headers always fits one log record (64 MiB).
        if !(1..=16 * 1024 * 1024).contains(&self.messaging_max_message_bytes) {
            return Err(ConfigError::Value {
                key: "messaging_max_message_bytes",
                reason: "must be 1 to 16777216".into(),
            });
        }
        if self.messaging_segment_bytes < 4096 {
            return Err(ConfigError::Value {
                key: "messaging_segment_bytes",
                reason: "must be at least 4096".into(),
            });
        }
        self.messaging_push_allow()?;
        if self.messaging_dedup_window < Duration::from_secs(1)
            || self.messaging_dedup_window > Duration::from_secs(7 * 24 * 60 * 60)
        {
            return Err(ConfigError::Value {
                key: "messaging_dedup_window",
                reason: "must be 1s to 7d".into(),
            });
        }
        if self.messaging_kafka_session_timeout < Duration::from_secs(1)
            || self.messaging_kafka_session_timeout > Duration::from_secs(300)
        {
            return Err(ConfigError::Value {
                key: "messaging_kafka_session_timeout",
                reason: "must be 1s to 5m".into(),
            });
        }
        if self.messaging_kafka_group_idle < Duration::from_secs(1)
            || self.messaging_kafka_group_idle > Duration::from_secs(24 * 60 * 60)
        {
            return Err(ConfigError::Value {
                key: "messaging_kafka_group_idle",
                reason: "must be 1s to 24h".into(),
            });
        }
        if self.search_refresh_interval < Duration::from_millis(10)
            || self.search_refresh_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::Value {
                key: "search_refresh_interval",
                reason: "must be 10ms to 60s".into(),
            });
        }
        if self.search_idle_timeout < Duration::from_secs(1) {
            return Err(ConfigError::Value {
                key: "search_idle_timeout",
                reason: "must be at least 1s".into(),
            });
        }
        if self.search_writer_idle < Duration::from_millis(100)
            || self.search_writer_idle > Duration::from_secs(60 * 60)
        {
            return Err(ConfigError::Value {
                key: "search_writer_idle",
                reason: "must be 100ms to 1h".into(),
            });
        }
        if self.search_max_open_indexes == 0 {
            return Err(ConfigError::Value {
                key: "search_max_open_indexes",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=64).contains(&self.search_query_threads) {
            return Err(ConfigError::Value {
                key: "search_query_threads",
                reason: "must be 1 to 64".into(),
            });
        }
        if self.search_writer_memory_bytes < SEARCH_WRITER_SHARE {
            return Err(ConfigError::Value {
                key: "search_writer_memory_bytes",
                reason: format!("must be at least one writer's share, {SEARCH_WRITER_SHARE}"),
            });
        }
        if !(1..=1024).contains(&self.messaging_max_partitions) {
            return Err(ConfigError::Value {
                key: "messaging_max_partitions",
                reason: "must be 1 to 1024".into(),
            });
        }
        if self.storage_s3_secret_access_key.is_some()
            && self.storage_s3_secret_access_key_file.is_some()
        {
            return Err(ConfigError::BothSecretSources(
                "storage_s3_secret_access_key",
            ));
        }
        if self.token_ttl > self.token_ttl_max {
            return Err(ConfigError::Value {
                key: "token_ttl",
                reason: "is longer than token_ttl_max".into(),
            });
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Value {
                key: "database_max_connections",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Returns the metadata-store URL, defaulting to SQLite under the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("plinth.db").display()
            ),
        }
    }

    /// Returns where object bytes live, from `storage_url` (default: files under the data
    /// directory).
    ///
    /// # Errors
    ///
    /// Returns an error naming `storage_url` for a URL this build cannot serve.
    pub fn storage_backend(&self) -> Result<StorageBackend, ConfigError> {
        let invalid = |reason: &str| ConfigError::Value {
            key: "storage_url",
            reason: reason.into(),
        };
        let Some(url) = &self.storage_url else {
            return Ok(StorageBackend::File(self.data_dir.join("blobs")));
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a directory"));
            }
            return Ok(StorageBackend::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("s3:// needs a bucket: s3://BUCKET[/PREFIX]"));
            }
            let prefix = prefix.trim_matches('/');
            return Ok(StorageBackend::S3 {
                bucket: bucket.to_owned(),
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                },
            });
        }
        Err(invalid("must be file://DIR or s3://BUCKET[/PREFIX]"))
    }

    /// Returns the directory of the search indexes (`search_dir`, default
    /// `<data_dir>/search`).
    pub fn search_dir(&self) -> PathBuf {
        self.search_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("search"))
    }

    /// Returns where messages live, from `messaging_url` (default: the embedded log under the
    /// data directory).
    ///
    /// # Errors
    ///
    /// Returns an error naming `messaging_url` for a URL this build cannot serve.
    pub fn messaging_backend(&self) -> Result<MessagingBackend, ConfigError> {
        let invalid = |reason: &str| ConfigError::Value {
            key: "messaging_url",
            reason: reason.into(),
        };
        let Some(url) = &self.messaging_url else {
            return Ok(MessagingBackend::File(self.data_dir.join("messages")));
        };
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid("file:// needs a directory"));
            }
            return Ok(MessagingBackend::File(PathBuf::from(path)));
        }
        if let Some(brokers) = url.strip_prefix("kafka://") {
            let brokers = brokers.trim_end_matches('/');
            if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':')) {
                return Err(invalid(
                    "kafka:// needs brokers: kafka://HOST:PORT[,HOST:PORT]",
                ));
            }
            return Ok(MessagingBackend::Kafka(brokers.to_owned()));
        }
        Err(invalid(
            "must be file://DIR or kafka://HOST:PORT[,HOST:PORT]",
        ))
    }

    /// Returns the networks of `messaging_push_allow`; a bare address is a network of one.
    ///
    /// # Errors
    ///
    /// Returns an error naming `messaging_push_allow` for an entry that is neither.
    pub fn messaging_push_allow(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.messaging_push_allow
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Value {
                        key: "messaging_push_allow",
                        reason: format!("`{entry}` is not an address or a network"),
                    })
            })
            .collect()
    }

    /// Returns the S3 secret key, read from its file if need be.
    ///
    /// # Errors
    ///
    /// Returns an error when the file cannot be read or is empty.
    pub fn storage_s3_secret_access_key(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(
            "storage_s3_secret_access_key",
            &self.storage_s3_secret_access_key,
            &self.storage_s3_secret_access_key_file,
        )
    }

    /// Returns the configured admin token, read from its file if need be.
    ///
    /// # Errors
    ///
    /// Returns an error when the file cannot be read or is empty.
    pub fn admin_token(&self) -> Result<Option<Secret>, ConfigError> {
        let token = read_secret("admin_token", &self.admin_token, &self.admin_token_file)?;
        if let Some(token) = &token {
            check_admin_token(token)?;
        }
        Ok(token)
    }

    /// Returns the configured master key, read from its file if need be.
    ///
    /// # Errors
    ///
    /// Returns an error when the file cannot be read or is empty.
    pub fn master_key(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret("master_key", &self.master_key, &self.master_key_file)
    }
}

/// The `PLINTH_*` environment, less the variables of clients and tests.
fn server_env() -> Env {
    Env::prefixed("PLINTH_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            !CLIENT_ENV_KEYS.contains(&key.as_str()) && !key.starts_with("test_")
        })
        .split("__")
}

mod secret;
#[cfg(test)]
mod tests;

pub use self::secret::Secret;
use self::secret::{check_admin_token, read_secret};
