//! [`Shared`]: the state every service's router is built on.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::auth::signing::{KeyRing, REFRESH_INTERVAL, SigningError};
use crate::auth::{Authenticator, TokenPolicy, secret};
use crate::config::{Config, ConfigError};
use crate::quota::Quotas;
use crate::ratelimit::RateLimits;
use crate::store::{Store, StoreError};
use crate::usage::Usage;

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing keys: {0}")]
    Signing(#[from] SigningError),
    #[error("cannot write the generated admin token to {}: {source}", path.display())]
    AdminTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Inner {
    config: Config,
    store: Store,
    auth: Authenticator,
    quotas: Quotas,
    usage: Usage,
    rate_limits: RateLimits,
    /// Turns true when the server starts shutting down.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Held (shared) by background work that uses the store; the shutdown takes it whole
    /// before closing the store.
    busy: Arc<tokio::sync::RwLock<()>>,
    /// Set when the store is about to close (after requests have drained).
    closing: std::sync::atomic::AtomicBool,
}

/// The shared state of a Plinth process: configuration, metadata store, auth, quotas,
/// rate limits and usage. Cheap to clone; every clone is the same state.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("backend", &self.0.store.backend())
            .finish_non_exhaustive()
    }
}

/// The admin token in force, and whether this start generated it.
#[derive(Clone, Debug)]
pub struct AdminToken {
    /// The token.
    pub token: String,
    /// Where a newly generated token was stored; `None` when it was configured or found.
    pub generated_at: Option<PathBuf>,
}

/// Returns the configured admin token, or the one generated on a previous start, or a new one
/// stored under the data directory with owner-only permissions.
///
/// # Errors
///
/// Returns an error when a configured file cannot be read or the new token cannot be stored.
pub fn resolve_admin_token(config: &Config) -> Result<AdminToken, OpenError> {
    if let Some(token) = config.admin_token()? {
        return Ok(AdminToken {
            token: token.expose().to_owned(),
            generated_at: None,
        });
    }
    let path = config.data_dir.join("admin_token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok(AdminToken {
                token,
                generated_at: None,
            });
        }
    }
    let token = secret::generate_admin_token();
    write_private(&path, &token).map_err(|source| OpenError::AdminTokenFile {
        path: path.clone(),
        source,
    })?;
    Ok(AdminToken {
        token,
        generated_at: Some(path),
    })
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

impl Shared {
    /// Opens the store, loads the signing keys and builds the shared state.
    ///
    /// # Errors
    ///
    /// Returns an error when the store cannot be opened or migrated, or a signing key cannot
    /// be unsealed.
    pub async fn open(config: Config, admin_token: &str) -> Result<Shared, OpenError> {
        let store = Store::open(&config.database_url(), config.database_max_connections).await?;
        let master_key = config.master_key()?;
        let keyring = KeyRing::open(
            store.clone(),
            master_key.as_ref().map(|key| key.expose()),
            config.token_ttl_max,
        )
        .await?;
        let policy = TokenPolicy {
            issuer: config.token_issuer.clone(),
            audience: config.token_audience.clone(),
            ttl: config.token_ttl,
            ttl_max: config.token_ttl_max,
            cache_ttl: config.auth_cache_ttl,
        };
        let auth = Authenticator::new(
            store.clone(),
            admin_token,
            Arc::new(keyring),
            policy,
            config.quotas.clone(),
        );
        let shared = Shared(Arc::new(Inner {
            quotas: Quotas::new(config.quotas.clone()),
            usage: Usage::new(store.clone()),
            rate_limits: RateLimits::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            busy: Arc::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            auth,
            store,
            config,
        }));
        shared.spawn_background();
        Ok(shared)
    }

    /// Returns the configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Returns the metadata store.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Returns the authenticator.
    pub fn auth(&self) -> &Authenticator {
        &self.0.auth
    }

    /// Returns the quota service.
    pub fn quotas(&self) -> &Quotas {
        &self.0.quotas
    }

    /// Returns the usage counters.
    pub fn usage(&self) -> &Usage {
        &self.0.usage
    }

    /// Returns the per-key rate limits.
    pub fn rate_limits(&self) -> &RateLimits {
        &self.0.rate_limits
    }

    /// Says that the server is shutting down: responses that would run for ever (event
    /// streams) end, so that draining does not wait for them.
    pub fn begin_shutdown(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Lets background work (a relay round, settling a push) finish before a graceful
    /// shutdown closes the store: hold the guard while working. `None` once the store is
    /// about to close: start nothing new. (While requests drain, work goes on.)
    pub async fn hold_open(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        use std::sync::atomic::Ordering;
        if self.0.closing.load(Ordering::SeqCst) {
            return None;
        }
        let guard = self.0.busy.clone().read_owned().await;
        (!self.0.closing.load(Ordering::SeqCst)).then_some(guard)
    }

    /// Watches for [`Shared::begin_shutdown`].
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.stopping.subscribe()
    }

    /// Waits (up to the shutdown grace) for background work holding the store open, then
    /// flushes usage and closes the store: the last step of a graceful shutdown.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.0
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let grace = self.0.config.shutdown_grace;
        if tokio::time::timeout(grace, self.0.busy.write())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "background work still running at shutdown; closing the store"
            );
        }
        if let Err(err) = self.0.usage.flush().await {
            tracing::error!(error = %err, "usage could not be flushed at shutdown");
        }
        self.0.store.close().await;
    }

    /// Starts the periodic work: flushing usage and re-reading signing keys. The tasks hold
    /// only a weak reference and end when the last `Shared` is dropped.
    fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.0);
        let every = self.0.config.usage_flush_interval;
        tokio::spawn(periodic(weak.clone(), every, |inner| async move {
            if let Err(err) = inner.usage.flush().await {
                tracing::warn!(error = %err, "usage flush failed; counters kept for the next one");
            }
        }));
        tokio::spawn(periodic(weak, REFRESH_INTERVAL, |inner| async move {
            if let Err(err) = inner.auth.keyring().reload().await {
                tracing::warn!(error = %err, "signing keys could not be reloaded");
            }
        }));
    }
}

async fn periodic<F, Fut>(weak: Weak<Inner>, every: Duration, work: F)
where
    F: Fn(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        work(inner).await;
    }
}
