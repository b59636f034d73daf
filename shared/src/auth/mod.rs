//! Authentication: who is calling, and what they may do.
//!
//! Every request carries `Authorization: Bearer <credential>`, where the credential is the
//! operator's admin token, a project's API key (`plinth_sk_...`) or an access token (a JWT
//! minted by the console). [`Caller`] is the axum extractor that resolves it; handlers then
//! ask the caller for the scope and resource they need.
//!
//! The hot path does not touch the database: verified tokens are cached until they expire,
//! and key state is cached for `auth_cache_ttl`, which bounds how long a revoked key (and
//! every token minted from it) keeps working on any replica.

mod caller;
mod mint;
pub mod pattern;
pub mod secret;
pub mod signing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use moka::sync::Cache;
use plinth_types::Scope;
use plinth_types::console::{Quotas, RateLimit, TokenClaims};

pub use self::caller::{ALL_INDEXES, Caller, Credential, Principal};
use self::pattern::ResourcePattern;
use self::signing::KeyRing;
use crate::error::ApiError;
use crate::ids::now_millis;
use crate::keys::{self, KeyRecord};
use crate::store::Store;

/// The hasher of the auth caches: keys are credentials of a few hundred bytes, where SipHash
/// would be a good part of a warm request's cost; foldhash's quality variant is randomly
/// seeded per process and several times faster.
type CacheHasher = foldhash::quality::RandomState;

/// Tolerated clock difference between the replica that minted a token and the one checking it.
const CLOCK_LEEWAY_SECS: u64 = 5;

/// Resolves bearer credentials into callers.
pub struct Authenticator {
    store: Store,
    admin_token_digest: Vec<u8>,
    admin_token_len: usize,
    keyring: Arc<KeyRing>,
    validation: Validation,
    issuer: String,
    audience: String,
    token_ttl: Duration,
    token_ttl_max: Duration,
    default_quotas: Quotas,
    cache_ttl: Duration,
    /// Resolved callers by credential: the one lookup of a warm request. quick_cache rather
    /// than moka here: its lookup costs a fraction of moka's, which matters on every request;
    /// entries carry their own expiry, checked on read.
    callers: quick_cache::sync::Cache<String, Resolved>,
    /// Key records by secret, misses included, so unknown secrets do not reach the store.
    keys_by_secret: Cache<String, Arc<Fetched>, CacheHasher>,
    /// Key records by id, for the tokens minted from them.
    keys_by_id: Cache<String, Arc<Fetched>, CacheHasher>,
    /// Verified token claims, until the token expires.
    tokens: Cache<String, Arc<TokenClaims>, CacheHasher>,
    /// Bumped by [`Authenticator::forget_keys`]; a lookup that began before a bump does not
    /// cache what it read.
    generation: AtomicU64,
}

/// A key record (or its absence) and when it was read from the store.
struct Fetched {
    at: Instant,
    record: Option<Arc<KeyRecord>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The token lifetimes and claims an [`Authenticator`] works with.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// `iss` of minted tokens, and the only issuer accepted.
    pub issuer: String,
    /// `aud` of minted tokens, and the only audience accepted.
    pub audience: String,
    /// Lifetime when a request names none.
    pub ttl: Duration,
    /// Longest lifetime a request may name.
    pub ttl_max: Duration,
    /// How long key state is cached.
    pub cache_ttl: Duration,
}

/// A cached resolution: the caller, and until when it may be reused without looking at the
/// key again (the cache TTL, or the token's expiry if that comes first).
#[derive(Clone)]
struct Resolved {
    caller: Caller,
    valid_until: Instant,
}

/// Caches verified tokens until their own expiry.
struct UntilExpiry;

impl moka::Expiry<String, Arc<TokenClaims>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        claims: &Arc<TokenClaims>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left_ms = claims.exp.saturating_mul(1000).saturating_sub(now_millis());
        Some(Duration::from_millis(left_ms.max(0) as u64))
    }
}

impl Authenticator {
    /// Builds an authenticator over `store` that accepts `admin_token` and the tokens of
    /// `keyring`.
    pub fn new(
        store: Store,
        admin_token: &str,
        keyring: Arc<KeyRing>,
        policy: TokenPolicy,
        default_quotas: Quotas,
    ) -> Authenticator {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[&policy.audience]);
        validation.set_issuer(&[&policy.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        let key_cache = || {
            Cache::builder()
                .max_capacity(100_000)
                .time_to_live(policy.cache_ttl)
                .build_with_hasher(CacheHasher::default())
        };
        Authenticator {
            store,
            admin_token_digest: digest(&SHA256, admin_token.as_bytes()).as_ref().to_vec(),
            admin_token_len: admin_token.len(),
            keyring,
            validation,
            issuer: policy.issuer,
            audience: policy.audience,
            token_ttl: policy.ttl,
            token_ttl_max: policy.ttl_max,
            default_quotas,
            cache_ttl: policy.cache_ttl,
            callers: quick_cache::sync::Cache::new(100_000),
            keys_by_secret: key_cache(),
            keys_by_id: key_cache(),
            generation: AtomicU64::new(0),
            tokens: Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry)
                .build_with_hasher(CacheHasher::default()),
        }
    }

    /// Returns the signing keys.
    pub fn keyring(&self) -> &Arc<KeyRing> {
        &self.keyring
    }

    /// Resolves a bearer credential.
    ///
    /// # Errors
    ///
    /// Returns the specific refusal: unknown credential, bad or expired token, revoked or
    /// expired key.
    pub async fn authenticate(&self, credential: &str) -> Result<Caller, ApiError> {
        if let Some(resolved) = self.callers.get(credential)
            && resolved.valid_until > Instant::now()
        {
            return Ok(resolved.caller);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let (caller, fetched_at) = self.resolve(credential, generation).await?;
        if let Some(fetched_at) = fetched_at {
            self.remember(credential, &caller, fetched_at, generation);
        }
        Ok(caller)
    }

    /// Resolves a credential from the caches below the caller cache, or the store. Returns
    /// when the key state it relied on was read, `None` for the admin.
    async fn resolve(
        &self,
        credential: &str,
        generation: u64,
    ) -> Result<(Caller, Option<Instant>), ApiError> {
        // Keys are told apart by their prefix first, so their path never hashes for the
        // admin comparison.
        if credential.starts_with(secret::KEY_PREFIX) {
            return self.authenticate_key(credential, generation).await;
        }
        // Digests are compared, not the tokens, so the comparison's timing says nothing about
        // the token; only a credential of the right length is worth hashing at all.
        if credential.len() == self.admin_token_len
            && digest(&SHA256, credential.as_bytes()).as_ref() == self.admin_token_digest.as_slice()
        {
            return Ok((Caller::admin(), None));
        }
        if credential.split('.').count() == 3 {
            return self.authenticate_token(credential, generation).await;
        }
        Err(ApiError::InvalidCredentials)
    }

    /// Caches a resolution until the key state it rests on is `cache_ttl` old, or until the
    /// credential expires if sooner: so no replica acts on a key state older than the TTL.
    /// Nothing is cached when the key caches were dropped meanwhile (`forget_keys`), since
    /// the state read may predate the change that dropped them.
    fn remember(&self, credential: &str, caller: &Caller, fetched_at: Instant, generation: u64) {
        let now = Instant::now();
        let mut valid_until = fetched_at + self.cache_ttl;
        if let Some(expires_at_ms) = caller.expires_at_ms {
            let left = expires_at_ms.saturating_sub(now_millis()).max(0) as u64;
            valid_until = valid_until.min(now + Duration::from_millis(left));
        }
        if self.generation.load(Ordering::Acquire) == generation {
            let resolved = Resolved {
                caller: caller.clone(),
                valid_until,
            };
            self.callers.insert(credential.to_owned(), resolved);
        }
    }

    async fn authenticate_key(
        &self,
        credential: &str,
        generation: u64,
    ) -> Result<(Caller, Option<Instant>), ApiError> {
        // The checksum turns away typos and random strings before any lookup.
        if !secret::is_well_formed_key(credential) {
            return Err(ApiError::InvalidCredentials);
        }
        // Cached by the secret itself, so a warm request does not hash it; the cache lives in
        // memory only, like the requests that carry the secret.
        let fetched = match self.keys_by_secret.get(credential) {
            Some(cached) => cached,
            None => {
                let hash = secret::hash_secret(credential);
                let at = Instant::now();
                let record = keys::record_by_hash(self.store.pool(), &hash).await?;
                let fetched = Arc::new(Fetched {
                    at,
                    record: record.map(Arc::new),
                });
                if self.generation.load(Ordering::Acquire) == generation {
                    self.keys_by_secret
                        .insert(credential.to_owned(), fetched.clone());
                }
                fetched
            }
        };
        let record = fetched
            .record
            .as_ref()
            .ok_or(ApiError::InvalidCredentials)?;
        check_key_state(record)?;
        let caller = Caller::new(Credential {
            principal: Principal::Key {
                project_id: record.project_id.as_str().into(),
                key_id: record.id.as_str().into(),
            },
            scopes: record.scopes.clone(),
            resources: record.resources.clone(),
            expires_at_ms: record.expires_at,
            rate_limit: self.effective_rate_limit(record),
            upload: None,
            search_filters: BTreeMap::new(),
        });
        Ok((caller, Some(fetched.at)))
    }

    async fn authenticate_token(
        &self,
        token: &str,
        generation: u64,
    ) -> Result<(Caller, Option<Instant>), ApiError> {
        let claims = match self.tokens.get(token) {
            Some(claims) if claims.exp * 1000 > now_millis() => claims,
            Some(_) => return Err(ApiError::TokenExpired),
            None => {
                let claims = Arc::new(self.verify(token).await?);
                self.tokens.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        // The token is only as good as the key it came from: revoking the key ends it.
        let fetched = self.key_by_id(&claims.sub, generation).await?;
        let record = fetched.record.as_ref().ok_or(ApiError::KeyRevoked)?;
        check_key_state(record)?;
        if record.project_id != claims.project {
            return Err(ApiError::InvalidToken(
                "the token's project does not match its key",
            ));
        }
        let resources = claims
            .resources
            .iter()
            .map(|text| ResourcePattern::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApiError::InvalidToken("malformed resource pattern"))?;
        let caller = Caller::new(Credential {
            principal: Principal::Token {
                project_id: claims.project.as_str().into(),
                key_id: claims.sub.as_str().into(),
            },
            scopes: claims.scopes.clone(),
            resources,
            expires_at_ms: Some(claims.exp * 1000),
            rate_limit: self.effective_rate_limit(record),
            upload: claims.upload.clone(),
            search_filters: claims.search_filters.clone(),
        });
        Ok((caller, Some(fetched.at)))
    }

    async fn verify(&self, token: &str) -> Result<TokenClaims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::InvalidToken("malformed header"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::InvalidToken("only EdDSA tokens are accepted"));
        }
        let kid = header
            .kid
            .ok_or(ApiError::InvalidToken("no `kid` in the header"))?;
        let key = self
            .keyring
            .verifying_key(&kid)
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::InvalidToken("unknown signing key"))?;
        let data =
            jsonwebtoken::decode::<TokenClaims>(token, &key, &self.validation).map_err(|err| {
                match err.kind() {
                    ErrorKind::ExpiredSignature => ApiError::TokenExpired,
                    ErrorKind::ImmatureSignature => ApiError::TokenNotYetValid,
                    ErrorKind::InvalidAudience => ApiError::InvalidToken("wrong audience"),
                    ErrorKind::InvalidIssuer => ApiError::InvalidToken("wrong issuer"),
                    ErrorKind::InvalidSignature => ApiError::InvalidToken("bad signature"),
                    ErrorKind::InvalidAlgorithm => ApiError::InvalidToken("algorithm not accepted"),
                    ErrorKind::MissingRequiredClaim(_) => ApiError::InvalidToken("missing claim"),
                    _ => ApiError::InvalidToken("malformed token"),
                }
            })?;
        Ok(data.claims)
    }

    async fn key_by_id(&self, key_id: &str, generation: u64) -> Result<Arc<Fetched>, ApiError> {
        if let Some(cached) = self.keys_by_id.get(key_id) {
            return Ok(cached);
        }
        let at = Instant::now();
        let record = keys::record_by_id(self.store.pool(), key_id).await?;
        let fetched = Arc::new(Fetched {
            at,
            record: record.map(Arc::new),
        });
        if self.generation.load(Ordering::Acquire) == generation {
            self.keys_by_id.insert(key_id.to_owned(), fetched.clone());
        }
        Ok(fetched)
    }

    /// Drops every cached key state on this replica, as after a revocation here. Other
    /// replicas pick the change up when their cache entries expire.
    pub fn forget_keys(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.callers.clear();
        self.keys_by_secret.invalidate_all();
        self.keys_by_id.invalidate_all();
    }

    fn effective_rate_limit(&self, record: &KeyRecord) -> Option<RateLimit> {
        if let Some(own) = record.rate_limit {
            return Some(own);
        }
        let per_second = record
            .project_quotas
            .requests_per_second
            .or(self.default_quotas.requests_per_second)?;
        let burst = record
            .project_quotas
            .request_burst
            .or(self.default_quotas.request_burst)
            .unwrap_or(per_second);
        Some(RateLimit {
            per_second: u32::try_from(per_second).unwrap_or(u32::MAX),
            burst: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
        })
    }
}

fn check_key_state(record: &KeyRecord) -> Result<(), ApiError> {
    if record.revoked_at.is_some() {
        return Err(ApiError::KeyRevoked);
    }
    if record.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(ApiError::KeyExpired);
    }
    Ok(())
}

/// Returns whether `scopes` grants `scope`.
pub fn has_scope(scopes: &[Scope], scope: Scope) -> bool {
    scopes.contains(&scope)
}
