//! Buckets: `{base}/storage/v1/buckets`.

use reqwest::Method;

use plinth_types::storage::{Bucket, CreateBucket, UpdateBucket};

use crate::client::Client;
use crate::error::Error;

/// Buckets.
impl Client {
    /// Creates a bucket in the credential's project (`POST /buckets`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_bucket_name`, `bucket_name_taken` or
    /// `quota_exceeded` when the bucket is refused.
    pub async fn create_bucket(&self, bucket: &CreateBucket) -> Result<Bucket, Error> {
        let url = self.storage_url(&["buckets"])?;
        self.send_json(self.request(Method::POST, url).json(bucket))
            .await
    }

    /// Lists the project's buckets, by name (`GET /buckets`).
    ///
    /// # Errors
    ///
    /// Only the failures every call shares.
    pub async fn list_buckets(&self) -> Result<Vec<Bucket>, Error> {
        let url = self.storage_url(&["buckets"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Returns a bucket's settings (`GET /buckets/{bucket}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `bucket_not_found` when the project has no such bucket.
    pub async fn get_bucket(&self, bucket: &str) -> Result<Bucket, Error> {
        let url = self.storage_url(&["buckets", bucket])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Changes a bucket's settings; fields left `None` keep their value
    /// (`PATCH /buckets/{bucket}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `bucket_not_found`, or `invalid_parameter` for a setting
    /// the server refuses.
    pub async fn update_bucket(
        &self,
        bucket: &str,
        update: &UpdateBucket,
    ) -> Result<Bucket, Error> {
        let url = self.storage_url(&["buckets", bucket])?;
        self.send_json(self.request(Method::PATCH, url).json(update))
            .await
    }

    /// Deletes a bucket (`DELETE /buckets/{bucket}`). An empty bucket is always deleted; one
    /// that holds objects only with `force`, which deletes them too.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `bucket_not_found`, which is also what a retried delete
    /// whose first attempt went through gets, or `bucket_not_empty` without `force`.
    pub async fn delete_bucket(&self, bucket: &str, force: bool) -> Result<(), Error> {
        let url = self.storage_url(&["buckets", bucket])?;

        let mut request = self.request(Method::DELETE, url);
        if force {
            request = request.query(&[("force", "true")]);
        }

        self.send_empty(request).await
    }
}
