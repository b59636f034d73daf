//! Token-signing keys: Ed25519 pairs kept in the metadata store, so every replica of every
//! service signs and verifies the same tokens.
//!
//! One key is active for signing at a time. Rotation adds a new active key and retires the old
//! one, which stays published (and accepted) for the longest token lifetime after its
//! retirement, so tokens it signed keep working until they expire. Private keys are sealed
//! with AES-256-GCM under a key derived from the operator's master key when one is set.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use plinth_types::console::{Jwk, Jwks, SigningKey, TokenClaims};
use sqlx::Row;

use crate::ids::{fill_random, from_millis, new_id, now_millis};
use crate::store::Store;

/// How often a replica re-reads the key set by itself, to pick up another replica's rotation.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Shortest gap between two reloads caused by tokens with an unknown `kid`, so a flood of
/// forged tokens cannot turn into a flood of queries.
const MISS_RELOAD_GAP: Duration = Duration::from_secs(1);

/// A failure of the key ring.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("metadata store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("signing key {kid} is sealed with a master key; configure `master_key`")]
    MasterKeyMissing { kid: String },
    #[error("signing key {kid} cannot be unsealed: wrong `master_key` or damaged row")]
    Unseal { kid: String },
    #[error("signing key {kid} is damaged: {why}")]
    Damaged { kid: String, why: &'static str },
    #[error("cannot create a signing key")]
    Generate,
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

struct Ring {
    active: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: Vec<Jwk>,
    loaded_at: Instant,
}

/// The set of signing keys this replica knows.
pub struct KeyRing {
    store: Store,
    seal: Option<LessSafeKey>,
    /// How long a retired key stays published: the longest token lifetime plus two refreshes.
    overlap: Duration,
    ring: RwLock<Ring>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("sealed", &self.seal.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the key set, creating the first key on a new store.
    ///
    /// # Errors
    ///
    /// Returns an error when the store fails or a stored key cannot be unsealed.
    pub async fn open(
        store: Store,
        master_key: Option<&str>,
        token_ttl_max: Duration,
    ) -> Result<KeyRing, SigningError> {
        let ring = KeyRing {
            store,
            seal: master_key.map(derive_seal_key),
            // A replica may sign with a key for up to one refresh after another retired it.
            overlap: token_ttl_max + 2 * REFRESH_INTERVAL,
            ring: RwLock::new(Ring {
                active: None,
                verifying: HashMap::new(),
                jwks: Vec::new(),
                loaded_at: Instant::now(),
            }),
        };
        ring.reload().await?;
        if ring.read().active.is_none() {
            ring.rotate().await?;
        }
        Ok(ring)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the published keys from the store.
    ///
    /// # Errors
    ///
    /// Returns an error when the store fails or a key cannot be unsealed.
    pub async fn reload(&self) -> Result<(), SigningError> {
        let cutoff = now_millis() - self.overlap.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT kid, public_key, private_key, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(cutoff)
        .fetch_all(self.store.pool())
        .await?;

        let mut active = None;
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for row in rows {
            let kid: String = row.try_get("kid")?;
            let public_b64: String = row.try_get("public_key")?;
            let retired_at: Option<i64> = row.try_get("retired_at")?;
            let public = STANDARD
                .decode(&public_b64)
                .map_err(|_| SigningError::Damaged {
                    kid: kid.clone(),
                    why: "public key",
                })?;
            if active.is_none() && retired_at.is_none() {
                let sealed: String = row.try_get("private_key")?;
                let der = self.unseal(&kid, &sealed)?;
                active = Some((kid.clone(), EncodingKey::from_ed_der(&der)));
            }
            verifying.insert(kid.clone(), DecodingKey::from_ed_der(&public));
            jwks.push(Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: URL_SAFE_NO_PAD.encode(&public),
                kid,
                alg: "EdDSA".into(),
                use_: "sig".into(),
            });
        }
        let mut ring = self
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *ring = Ring {
            active,
            verifying,
            jwks,
            loaded_at: Instant::now(),
        };
        Ok(())
    }

    /// Makes a new key the active one and retires the current one.
    ///
    /// # Errors
    ///
    /// Returns an error when the store fails.
    pub async fn rotate(&self) -> Result<SigningKey, SigningError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SigningError::Generate)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningError::Generate)?;
        let kid = new_id("sig");
        let now = now_millis();
        let public = STANDARD.encode(pair.public_key().as_ref());
        let sealed = self.seal(&kid, pkcs8.as_ref());

        let mut tx = self.store.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, private_key, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&kid)
        .bind(&public)
        .bind(&sealed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        self.reload().await?;
        Ok(SigningKey {
            kid,
            created_at: from_millis(now),
            retired_at: None,
            active: true,
        })
    }

    /// Lists the published keys, newest first.
    ///
    /// # Errors
    ///
    /// Returns an error when the store fails.
    pub async fn list(&self) -> Result<Vec<SigningKey>, SigningError> {
        let cutoff = now_millis() - self.overlap.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT kid, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(cutoff)
        .fetch_all(self.store.pool())
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut seen_active = false;
        for row in rows {
            let retired_at: Option<i64> = row.try_get("retired_at")?;
            let active = retired_at.is_none() && !seen_active;
            seen_active |= active;
            keys.push(SigningKey {
                kid: row.try_get("kid")?,
                created_at: from_millis(row.try_get("created_at")?),
                retired_at: retired_at.map(from_millis),
                active,
            });
        }
        Ok(keys)
    }

    /// Returns the public keys as a JWKS document.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.read().jwks.clone(),
        }
    }

    /// Signs `claims` with the active key.
    ///
    /// # Errors
    ///
    /// Returns an error when no key is active or signing fails.
    pub fn sign(&self, claims: &TokenClaims) -> Result<String, SigningError> {
        let ring = self.read();
        let (kid, key) = ring.active.as_ref().ok_or(SigningError::Generate)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Returns the id of the active key.
    pub fn active_kid(&self) -> Option<String> {
        self.read().active.as_ref().map(|(kid, _)| kid.clone())
    }

    /// Returns the verifying key for `kid`, reloading the set once if the id is new to this
    /// replica (another one may have rotated).
    ///
    /// # Errors
    ///
    /// Returns an error when the reload fails.
    pub async fn verifying_key(&self, kid: &str) -> Result<Option<DecodingKey>, SigningError> {
        if let Some(key) = self.read().verifying.get(kid) {
            return Ok(Some(key.clone()));
        }
        let stale = self.read().loaded_at.elapsed() >= MISS_RELOAD_GAP;
        if stale {
            self.reload().await?;
        }
        Ok(self.read().verifying.get(kid).cloned())
    }

    fn seal(&self, kid: &str, der: &[u8]) -> String {
        let Some(key) = &self.seal else {
            return format!("plain:{}", STANDARD.encode(der));
        };
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut sealed = der.to_vec();
        // The kid is bound in as associated data, so a sealed key cannot be moved to
        // another row.
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kid.as_bytes()),
            &mut sealed,
        )
        .expect("AES-GCM sealing of a short buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("aes256gcm:{}", STANDARD.encode(out))
    }

    fn unseal(&self, kid: &str, stored: &str) -> Result<Vec<u8>, SigningError> {
        let damaged = |why| SigningError::Damaged {
            kid: kid.to_owned(),
            why,
        };
        if let Some(plain) = stored.strip_prefix("plain:") {
            return STANDARD.decode(plain).map_err(|_| damaged("private key"));
        }
        let sealed = stored
            .strip_prefix("aes256gcm:")
            .ok_or_else(|| damaged("private key"))?;
        let key = self
            .seal
            .as_ref()
            .ok_or_else(|| SigningError::MasterKeyMissing {
                kid: kid.to_owned(),
            })?;
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| damaged("private key"))?;
        if bytes.len() < NONCE_LEN {
            return Err(damaged("private key"));
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| damaged("nonce"))?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut body,
            )
            .map_err(|_| SigningError::Unseal {
                kid: kid.to_owned(),
            })?;
        Ok(plain.to_vec())
    }
}

/// Derives the AES-256 key that seals private keys from the operator's master key, so any
/// string of enough entropy can serve as one.
fn derive_seal_key(master: &str) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, b"plinth signing keys").extract(master.as_bytes());
    let mut key = [0u8; 32];
    prk.expand(&[b"aes-256-gcm"], HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut key))
        .expect("HKDF-SHA256 can always produce 32 bytes");
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key is a valid AES-256 key"),
    )
}
