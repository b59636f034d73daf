//! Listings of a bucket, one page or all of them, and signed URLs.

use futures::stream::{self, Stream, TryStreamExt};
use reqwest::Method;
use url::Url;

use plinth_types::storage::{ListObjectsQuery, ObjectInfo, ObjectListing, SignUrl, SignedUrl};

use crate::client::Client;
use crate::error::Error;

/// Listings and signed URLs.
impl Client {
    /// Lists one page of a bucket's objects, in key order
    /// (`GET /buckets/{bucket}/objects`). With a delimiter, keys that go on past it are
    /// grouped into [`ObjectListing::common_prefixes`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `bucket_not_found`, `invalid_cursor` for a cursor this
    /// server did not issue, or `invalid_parameter` for a limit outside 1 to 1000.
    pub async fn list_objects(
        &self,
        bucket: &str,
        query: &ListObjectsQuery,
    ) -> Result<ObjectListing, Error> {
        let url = self.storage_url(&["buckets", bucket, "objects"])?;
        self.send_json(self.request(Method::GET, url).query(query))
            .await
    }

    /// Streams every object `query` matches, fetching page after page as the stream is read
    /// and following the cursors until the last one.
    ///
    /// `query.limit` sets the page size, `query.cursor` where to start. Only objects are
    /// yielded: with a delimiter, the keys grouped under common prefixes are skipped, so a
    /// caller that needs the prefixes reads pages with [`Client::list_objects`]. The stream
    /// owns a clone of the client and can outlive `self`.
    ///
    /// # Errors
    ///
    /// The stream yields the first error of [`Client::list_objects`] and then ends.
    pub fn list_all(
        &self,
        bucket: &str,
        query: &ListObjectsQuery,
    ) -> impl Stream<Item = Result<ObjectInfo, Error>> + Send + 'static {
        let client = self.clone();
        let bucket = bucket.to_owned();

        // The state is the query of the page still to fetch; `None` once the last page is in.
        let pages = stream::try_unfold(Some(query.clone()), move |next| {
            let client = client.clone();
            let bucket = bucket.clone();
            async move {
                let Some(query) = next else {
                    return Ok(None);
                };
                let page = client.list_objects(&bucket, &query).await?;
                let next = page.next_cursor.map(|cursor| ListObjectsQuery {
                    cursor: Some(cursor),
                    ..query
                });
                Ok(Some((page.objects, next)))
            }
        });

        pages
            .map_ok(|objects| stream::iter(objects.into_iter().map(Ok)))
            .try_flatten()
    }

    /// Creates a URL that allows one method on one object, without credentials, until it
    /// expires (`POST /buckets/{bucket}/signed-urls`). The returned path is relative to the
    /// server; [`Client::resolve_signed_url`] makes it absolute.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `bucket_not_found`, `invalid_object_key`, or
    /// `invalid_parameter` for a lifetime the server refuses.
    pub async fn sign_url(&self, bucket: &str, request: &SignUrl) -> Result<SignedUrl, Error> {
        let url = self.storage_url(&["buckets", bucket, "signed-urls"])?;
        self.send_json(self.request(Method::POST, url).json(request))
            .await
    }

    /// Returns the absolute URL of a signed URL: the client's base URL, path prefix included,
    /// followed by the signed path and query.
    ///
    /// # Errors
    ///
    /// Returns [`Error::MalformedResponse`] when `signed.url` is not a path from the root.
    pub fn resolve_signed_url(&self, signed: &SignedUrl) -> Result<Url, Error> {
        if !signed.url.starts_with('/') {
            return Err(Error::MalformedResponse(format!(
                "the signed URL `{}` is not a path",
                signed.url
            )));
        }

        let base = self.base_url().as_str().trim_end_matches('/');
        Url::parse(&format!("{base}{}", signed.url))
            .map_err(|err| Error::MalformedResponse(format!("the signed URL: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use plinth_types::storage::SignedMethod;
    use time::OffsetDateTime;

    use super::*;

    fn signed(url: &str) -> SignedUrl {
        SignedUrl {
            url: url.to_owned(),
            method: SignedMethod::Get,
            expires_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn signed_urls_resolve_under_the_base_path() {
        let path = "/storage/v1/signed/photos/a%20b.png?token=t.o.k";

        for (base, expected) in [
            ("http://plinth.test", "http://plinth.test"),
            ("http://plinth.test/api/", "http://plinth.test/api"),
        ] {
            let client = Client::builder().base_url(base).build().unwrap();

            let url = client.resolve_signed_url(&signed(path)).unwrap();

            assert_eq!(url.as_str(), format!("{expected}{path}"), "{base}");
        }
    }

    #[test]
    fn signed_url_that_is_not_a_path_is_malformed() {
        let client = Client::builder().build().unwrap();

        let result = client.resolve_signed_url(&signed("https://elsewhere.test/x"));

        assert!(
            matches!(result, Err(Error::MalformedResponse(_))),
            "{result:?}"
        );
    }
}
