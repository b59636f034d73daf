//! Object storage: buckets and objects under `/storage/v1`, on the shared auth and quota layer.
//!
//! - [`names`]: bucket names and object keys, validated once.
//! - [`blobs`]: the embedded blob store (files named by the server, synced before commit).
//! - [`meta`]: the bucket and object rows and the event outbox, in the metadata store.
//! - [`buckets`], [`objects`], [`put`], [`get`], [`list`], [`signed`]: the HTTP routes.
//!
//! - [`multipart`], [`uploads`]: multipart uploads and the sweep of abandoned ones.
//!
//! An object becomes visible when its row commits, after its blob is durable; the quota
//! gauges move in that same transaction, and so does the outbox event. Blobs live in files
//! (the default) or in an S3 bucket; the metadata always lives in the metadata store.

pub mod blobs;
pub mod buckets;
mod conditions;
pub mod get;
pub mod list;
pub mod meta;
pub mod multipart;
pub mod names;
pub mod objects;
pub mod put;
pub mod signed;
pub mod uploads;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef};
use plinth_shared::Shared;
use plinth_shared::config::{Config, StorageBackend};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::blobs::{Blobs, FileBlobs, S3Blobs, S3Settings};

/// The storage service's state.
#[derive(Clone, Debug)]
pub struct Storage {
    shared: Shared,
    blobs: Blobs,
}

impl FromRef<Storage> for Shared {
    fn from_ref(storage: &Storage) -> Shared {
        storage.shared.clone()
    }
}

impl Storage {
    /// Opens the blob store the configuration names, removing the files interrupted writes
    /// left behind, and starts the sweeper of expired multipart uploads.
    ///
    /// # Errors
    ///
    /// Returns an error when `storage_url` is unusable or its directory cannot be created.
    pub async fn open(shared: Shared) -> Result<Storage, std::io::Error> {
        let blobs = open_blobs(shared.config()).await?;
        let storage = Storage { shared, blobs };
        let pool = storage.shared.store().pool().clone();
        let removed = storage
            .blobs
            .collect_orphans(|blob_id| {
                let pool = pool.clone();
                async move {
                    meta::blob_is_named(&pool, &blob_id)
                        .await
                        .map_err(std::io::Error::other)
                }
            })
            .await?;
        if removed > 0 {
            tracing::info!(removed, "orphaned blob files removed");
        }
        let expiry = storage.shared.config().storage_upload_expiry;
        let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(multipart::sweep_expired(storage.clone(), every));
        Ok(storage)
    }

    /// Returns the blob store.
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }
}

/// The object routes are listed here rather than through `routes!`: axum needs the key as a
/// wildcard (`{*key}`, `/` included), which OpenAPI has no syntax for.
/// Opens the blob store `storage_url` names.
async fn open_blobs(config: &Config) -> std::io::Result<Blobs> {
    match config.storage_backend().map_err(std::io::Error::other)? {
        StorageBackend::File(dir) => Ok(Blobs::File(FileBlobs::open(dir).await?)),
        StorageBackend::S3 { bucket, prefix } => {
            let secret = config
                .storage_s3_secret_access_key()
                .map_err(std::io::Error::other)?;
            let credentials = match (&config.storage_s3_access_key_id, secret) {
                (Some(id), Some(secret)) => Some((id.clone(), secret.expose().to_owned())),
                _ => None,
            };
            let settings = S3Settings {
                bucket,
                prefix,
                endpoint: config.storage_s3_endpoint.clone(),
                region: config.storage_s3_region.clone(),
                path_style: config.storage_s3_path_style,
                credentials,
            };
            Ok(Blobs::S3(S3Blobs::open(settings).await?))
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    tags((name = "storage", description = "Buckets and objects")),
    paths(
        put::put_object,
        get::get_object,
        get::head_object,
        objects::delete_object,
        multipart::upload_part
    )
)]
struct StorageDoc;

/// The object routes. Their bodies are streamed under the limit each upload computes, not
/// the JSON body limit.
fn object_routes() -> axum::routing::MethodRouter<Storage> {
    axum::routing::put(put::put_object)
        .get(get::get_object)
        .head(get::head_object)
        .delete(objects::delete_object)
        .layer(DefaultBodyLimit::disable())
}

/// Signed URLs: the credential is the `token` query parameter.
fn signed_routes() -> axum::routing::MethodRouter<Storage> {
    axum::routing::put(signed::signed_put)
        .get(signed::signed_get)
        .head(signed::signed_head)
        .layer(DefaultBodyLimit::disable())
}

/// Parts stream under the object limit, like objects.
fn part_routes() -> axum::routing::MethodRouter<Storage> {
    axum::routing::put(multipart::upload_part).layer(DefaultBodyLimit::disable())
}

/// Public buckets: no credential at all.
fn public_routes() -> axum::routing::MethodRouter<Storage> {
    axum::routing::get(signed::public_get).head(signed::public_head)
}

/// Builds the storage routes (and their OpenAPI paths).
pub fn router(storage: Storage) -> OpenApiRouter {
    let v1 = OpenApiRouter::new()
        .routes(routes!(buckets::create_bucket, buckets::list_buckets))
        .routes(routes!(
            buckets::get_bucket,
            buckets::update_bucket,
            buckets::delete_bucket
        ))
        .routes(routes!(list::list_objects))
        .routes(routes!(signed::create_signed_url))
        .routes(routes!(multipart::create_upload))
        .routes(routes!(multipart::abort_upload))
        .routes(routes!(multipart::list_parts))
        .routes(routes!(multipart::complete_upload))
        .route(
            "/buckets/{bucket}/uploads/{upload}/parts/{part}",
            part_routes(),
        )
        .route("/buckets/{bucket}/objects/{*key}", object_routes())
        .route("/signed/{bucket}/{*key}", signed_routes())
        .route("/public/{project}/{bucket}/{*key}", public_routes());
    OpenApiRouter::with_openapi(StorageDoc::openapi())
        .nest("/storage/v1", v1)
        .with_state(storage)
}
