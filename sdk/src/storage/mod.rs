//! The storage API: buckets, objects, listings and signed URLs, all under `{base}/storage/v1`.
//!
//! The methods live on [`Client`] itself, next to the console ones, rather than on a separate
//! handle: bucket and object names do not clash with any console method, and one type keeps
//! the credential, the retries and the timeout in a single place.
//!
//! - `buckets`: create, list, show, change and delete buckets.
//! - `put`: uploads from bytes, files and readers, with [`PutOptions`]; server-side copies.
//! - `get`: whole and ranged reads, streamed downloads, [`ObjectHead`], deletes.
//! - `list`: one page of a listing, every page as a stream, and signed URLs.
//! - `multipart`: multipart uploads, route by route, and helpers that send a file or a
//!   reader in parallel parts and resume a file's upload, with [`MultipartOptions`].
//!
//! Every route needs a project's API key or access token with `storage:read` (reads,
//! listings) or `storage:write` (writes, deletes, bucket changes); the admin token has no
//! project and is refused. The failures every call shares are listed on [`Client`].

mod buckets;
mod get;
mod list;
mod multipart;
mod put;

use url::Url;

use crate::client::Client;
use crate::error::Error;

pub use self::get::ObjectHead;
pub use self::multipart::{MultipartOptions, PartSent};
pub use self::put::{Checksum, PutOptions};

impl Client {
    /// Returns the URL of a storage route: `{base}/storage/v1/{segments...}`.
    ///
    /// # Errors
    ///
    /// As [`Client::url`].
    pub(crate) fn storage_url(&self, segments: &[&str]) -> Result<Url, Error> {
        self.url(
            ["storage", "v1"]
                .into_iter()
                .chain(segments.iter().copied()),
        )
    }

    /// Returns the URL of an object: `{base}/storage/v1/buckets/{bucket}/objects/{key}`.
    ///
    /// The bucket is one encoded segment; the key keeps its `/`, each part between them
    /// encoded on its own, so the server reads the key back exactly as given.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidKey`] for a key [`check_key`] refuses, and the errors of
    /// [`Client::url`] for the bucket.
    pub(crate) fn object_url(&self, bucket: &str, key: &str) -> Result<Url, Error> {
        check_key(key)?;
        let mut url = self.storage_url(&["buckets", bucket, "objects"])?;

        url.path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot have a path".to_owned()))?
            .extend(key.split('/'));

        Ok(url)
    }
}

/// Refuses a key that would not reach the server as written: an empty key, or one with a `.`
/// or `..` segment, which the URL standard removes (percent-encoded or not). The server
/// refuses such keys as well; the client refuses them first because the URL it would send
/// names another object.
///
/// Empty segments (`a//b`, `dir/`) are valid keys and are kept.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    let dot_segment = key.split('/').any(|segment| matches!(segment, "." | ".."));
    if key.is_empty() || dot_segment {
        return Err(Error::InvalidKey(key.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base_url: &str) -> Client {
        Client::builder().base_url(base_url).build().unwrap()
    }

    fn object_path(key: &str) -> String {
        let url = client("http://plinth.test/api/")
            .object_url("photos", key)
            .unwrap();
        url.path().to_owned()
    }

    #[test]
    fn key_segments_are_encoded_and_slashes_kept() {
        let cases = [
            ("cat.png", "cat.png"),
            ("2024/summer/cat 1.png", "2024/summer/cat%201.png"),
            ("ünï/ключ", "%C3%BCn%C3%AF/%D0%BA%D0%BB%D1%8E%D1%87"),
            ("what?#frag", "what%3F%23frag"),
            ("100%/real", "100%25/real"),
            ("a//b/", "a//b/"),
            ("..a/a..", "..a/a.."),
            ("semi;colon=x&y", "semi;colon=x&y"),
        ];

        for (key, encoded) in cases {
            assert_eq!(
                object_path(key),
                format!("/api/storage/v1/buckets/photos/objects/{encoded}"),
                "{key:?}"
            );
        }
    }

    #[test]
    fn keys_with_dot_segments_are_refused() {
        let client = client("http://plinth.test");

        for key in ["", ".", "..", "a/../b", "./a", "a/.", "a/.."] {
            let url = client.object_url("photos", key);
            assert!(
                matches!(&url, Err(Error::InvalidKey(got)) if got == key),
                "{key:?}: {url:?}"
            );
        }
    }

    #[test]
    fn bucket_is_one_segment_and_checked_like_an_id() {
        let client = client("http://plinth.test");

        let url = client.object_url("a/b", "k").unwrap();
        assert_eq!(url.path(), "/storage/v1/buckets/a%2Fb/objects/k");

        let refused = client.object_url("..", "k");
        assert!(matches!(refused, Err(Error::InvalidId(_))), "{refused:?}");
    }
}
