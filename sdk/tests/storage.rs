//! The storage methods of the SDK against a real server, started in-process on every
//! metadata backend.

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest::{SHA256, digest};
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use plinth_sdk::types::console::{CreateKey, CreateProject};
use plinth_sdk::types::storage::{
    CreateBucket, ListObjectsQuery, SignUrl, SignedMethod, UpdateBucket,
};
use plinth_sdk::types::{ErrorCode, Scope};
use plinth_sdk::{Checksum, Client, Error, MultipartOptions, PutOptions};
use plinth_shared::backend_tests;
use plinth_shared::testkit::TestBackend;

/// A server on a free port, and a client holding a key of a fresh project with both storage
/// scopes. The backend is kept so its directory outlives the test.
struct Tenant {
    client: Client,
    _backend: TestBackend,
}

async fn start(backend: TestBackend) -> Tenant {
    let shared = plinth_shared::Shared::open(backend.config.clone(), &backend.admin_token)
        .await
        .unwrap();
    let storage = plinth_storage::Storage::open(shared.clone()).await.unwrap();
    let routes = plinth_console::router(shared.clone()).merge(plinth_storage::router(storage));
    let (routes, api) = routes.split_for_parts();
    let app = plinth_shared::http::app(routes, api, &shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        plinth_shared::http::serve(listener, app, shared, std::future::pending()).await
    });

    let admin = Client::builder()
        .base_url(&url)
        .token(&backend.admin_token)
        .max_retries(0)
        .build()
        .unwrap();
    let project = CreateProject {
        name: "sdk-storage".to_owned(),
        quotas: None,
    };
    let project = admin.create_project(&project).await.unwrap();
    let key = CreateKey {
        name: "sdk".to_owned(),
        scopes: vec![Scope::StorageRead, Scope::StorageWrite],
        ..CreateKey::default()
    };
    let key = admin.create_key(&project.id, &key).await.unwrap();

    Tenant {
        client: admin.with_token(key.secret),
        _backend: backend,
    }
}

async fn create_bucket(client: &Client, name: &str) {
    let bucket = CreateBucket {
        name: name.to_owned(),
        ..CreateBucket::default()
    };
    client.create_bucket(&bucket).await.unwrap();
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes).as_ref().try_into().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bytes no compressor or dedup would shortcut: a xorshift sequence.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn code(result: Result<impl std::fmt::Debug, Error>) -> Option<ErrorCode> {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.code(),
    }
}

async fn files_stream_up_and_down_and_copy_server_side(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    create_bucket(client, "files").await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = noise(8 * 1024 * 1024 + 123);
    let source = dir.path().join("source.bin");
    tokio::fs::write(&source, &bytes).await.unwrap();

    let options = PutOptions {
        content_type: Some("application/x-test".to_owned()),
        metadata: [("owner".to_owned(), "ada".to_owned())].into(),
        checksum: Some(Checksum::Sha256(sha256(&bytes))),
        ..PutOptions::default()
    };
    let key = "big files/ünï?#%.bin";
    let info = client
        .put_file("files", key, &source, &options)
        .await
        .unwrap();
    assert_eq!((info.key.as_str(), info.size), (key, bytes.len() as u64));
    assert_eq!(info.sha256, hex(&sha256(&bytes)));

    let target = dir.path().join("target.bin");
    let mut file = tokio::fs::File::create(&target).await.unwrap();
    let head = client.download("files", key, &mut file).await.unwrap();
    file.shutdown().await.unwrap();
    let downloaded = tokio::fs::read(&target).await.unwrap();
    assert_eq!(sha256(&downloaded), sha256(&bytes));
    assert_eq!(
        (head.size, head.etag.as_str()),
        (info.size, info.etag.as_str())
    );

    let head = client.head_object("files", key).await.unwrap();
    assert_eq!(head.content_type, "application/x-test");
    assert_eq!(head.metadata["owner"], "ada");
    let range = client.get_range("files", key, 1000, 1999).await.unwrap();
    assert_eq!(&range[..], &bytes[1000..2000]);
    let past_end = client.get_range("files", key, 1 << 40, (1 << 40) + 1).await;
    assert_eq!(code(past_end), Some(ErrorCode::RangeNotSatisfiable));

    let copy = client
        .copy_object("files", "big files/ünï?#%.bin", "files", "copy.bin")
        .await;
    assert!(matches!(copy, Err(Error::InvalidHeader(_))), "{copy:?}");
    client
        .put_file("files", "plain.bin", &source, &PutOptions::default())
        .await
        .unwrap();
    let copy = client
        .copy_object("files", "plain.bin", "files", "copies/plain.bin")
        .await
        .unwrap();
    assert_eq!(
        (copy.size, copy.sha256.as_str()),
        (info.size, info.sha256.as_str())
    );

    delete_and_refuse(client, key).await;
}

/// Deletes the object, and checks that conditions and checksums are enforced on the way.
async fn delete_and_refuse(client: &Client, key: &str) {
    let create_only = PutOptions {
        if_none_match_any: true,
        ..PutOptions::default()
    };
    let taken = client.put_object("files", key, "x", &create_only).await;
    assert_eq!(code(taken), Some(ErrorCode::PreconditionFailed));
    let corrupt = PutOptions {
        checksum: Some(Checksum::Md5([0; 16])),
        ..PutOptions::default()
    };
    let corrupt = client.put_object("files", "new.txt", "x", &corrupt).await;
    assert_eq!(code(corrupt), Some(ErrorCode::ChecksumMismatch));

    client.delete_object("files", key).await.unwrap();
    let gone = client.head_object("files", key).await;
    assert!(
        matches!(&gone, Err(err) if err.status() == Some(404)),
        "{gone:?}"
    );
    client.delete_object("files", key).await.unwrap();
}

async fn listings_follow_cursors_and_signed_urls_need_no_key(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    create_bucket(client, "logs").await;
    for day in 0..25 {
        let key = format!("2025/{day:02}.log");
        let body = format!("day {day}").into_bytes();
        client
            .put_object("logs", &key, body, &PutOptions::default())
            .await
            .unwrap();
    }
    let reader = std::io::Cursor::new(b"read from a reader".to_vec());
    client
        .put_reader("logs", "readme.txt", reader, &PutOptions::default())
        .await
        .unwrap();

    let query = ListObjectsQuery {
        prefix: Some("2025/".to_owned()),
        limit: Some(10),
        ..ListObjectsQuery::default()
    };
    let all: Vec<_> = client.list_all("logs", &query).try_collect().await.unwrap();
    let keys: Vec<_> = all.iter().map(|object| object.key.clone()).collect();
    let expected: Vec<_> = (0..25).map(|day| format!("2025/{day:02}.log")).collect();
    assert_eq!(keys, expected);
    let grouped = ListObjectsQuery {
        delimiter: Some("/".to_owned()),
        ..ListObjectsQuery::default()
    };
    let top = client.list_objects("logs", &grouped).await.unwrap();
    assert_eq!(top.common_prefixes, ["2025/"]);
    assert_eq!(top.objects.len(), 1);

    let sign = SignUrl {
        key: "readme.txt".to_owned(),
        method: SignedMethod::Get,
        expires_in: Some(60),
        content_type: None,
        max_size: None,
    };
    let signed = client.sign_url("logs", &sign).await.unwrap();
    let url = client.resolve_signed_url(&signed).unwrap();
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(&fetched.bytes().await.unwrap()[..], b"read from a reader");

    manage_the_bucket(client).await;
}

/// Changes the bucket's settings, then deletes it, which needs `force` while it holds
/// objects.
async fn manage_the_bucket(client: &Client) {
    let update = UpdateBucket {
        public_read: Some(true),
        ..UpdateBucket::default()
    };
    assert!(
        client
            .update_bucket("logs", &update)
            .await
            .unwrap()
            .public_read
    );
    let names: Vec<_> = client.list_buckets().await.unwrap();
    assert_eq!(names.len(), 1);

    let refused = client.delete_bucket("logs", false).await;
    assert_eq!(code(refused), Some(ErrorCode::BucketNotEmpty));
    client.delete_bucket("logs", true).await.unwrap();
    let gone = client.get_bucket("logs").await;
    assert_eq!(code(gone), Some(ErrorCode::BucketNotFound));
}

#[tokio::test]
async fn keys_the_server_would_misread_are_refused_before_sending() {
    // Nothing listens here: a request that left the client would fail as transport.
    let client = Client::builder()
        .base_url("http://127.0.0.1:9")
        .max_retries(0)
        .build()
        .unwrap();

    let result = client.get_object("bucket", "a/../b").await;

    assert!(matches!(result, Err(Error::InvalidKey(_))), "{result:?}");
}

/// An endless-looking source of pseudo-random bytes that holds none of them: `len` bytes of
/// a xorshift sequence, produced as they are read.
struct Generated {
    state: u64,
    left: u64,
}

impl tokio::io::AsyncRead for Generated {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.remaining())
        } else {
            n
        };
        let mut chunk = Vec::with_capacity(n);
        while chunk.len() < n {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let word = self.state.to_le_bytes();
            let take = (n - chunk.len()).min(8);
            chunk.extend_from_slice(&word[..take]);
        }
        buf.put_slice(&chunk);
        self.left -= n as u64;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A sink that keeps only the SHA-256 and the length of what is written to it.
struct Hashing {
    context: aws_lc_rs::digest::Context,
    len: u64,
}

impl tokio::io::AsyncWrite for Hashing {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.context.update(buf);
        self.len += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A 1 GiB object goes up from a reader and comes down into a writer, client and server in
/// this one process, without the process's peak memory growing by more than a few chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_round_trips_with_bounded_memory() {
    const SIZE: u64 = 1 << 30;
    let tenant = start(TestBackend::sqlite()).await;
    create_bucket(&tenant.client, "large").await;
    let before = peak_rss();

    let mut expected = aws_lc_rs::digest::Context::new(&SHA256);
    let mut copy = Generated {
        state: 0x9e37_79b9_7f4a_7c15,
        left: SIZE,
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut read = tokio::io::ReadBuf::new(&mut buf);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let _ = tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut copy), &mut cx, &mut read);
        if read.filled().is_empty() {
            break;
        }
        expected.update(read.filled());
    }
    let expected = hex(expected.finish().as_ref());

    let source = Generated {
        state: 0x9e37_79b9_7f4a_7c15,
        left: SIZE,
    };
    let stored = tenant
        .client
        .put_reader("large", "gib.bin", source, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(stored.size, SIZE);
    assert_eq!(stored.sha256, expected, "the server hashed what was sent");

    let mut sink = Hashing {
        context: aws_lc_rs::digest::Context::new(&SHA256),
        len: 0,
    };
    tenant
        .client
        .download("large", "gib.bin", &mut sink)
        .await
        .unwrap();
    assert_eq!(sink.len, SIZE);
    assert_eq!(hex(sink.context.finish().as_ref()), expected);

    let growth = peak_rss().saturating_sub(before);
    eprintln!("1 GiB round trip: peak memory grew by {} MiB", growth >> 20);
    assert!(
        growth < 128 << 20,
        "peak memory grew by {} MiB for a 1 GiB object",
        growth >> 20
    );
}

/// The part numbers a multipart helper reports sent, sorted.
fn recorder() -> (Arc<Mutex<Vec<u32>>>, MultipartOptions) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let options = MultipartOptions {
        part_size: 5 << 20,
        concurrency: 3,
        on_part_sent: Some(Arc::new(move |number, _| {
            record.lock().unwrap().push(number);
        })),
    };
    (sent, options)
}

fn taken(sent: &Mutex<Vec<u32>>) -> Vec<u32> {
    let mut numbers = std::mem::take(&mut *sent.lock().unwrap());
    numbers.sort_unstable();
    numbers
}

async fn multipart_uploads_send_parts_side_by_side_and_resume(backend: TestBackend) {
    let tenant = start(backend).await;
    let client = &tenant.client;
    create_bucket(client, "parts").await;
    // Two full 5 MiB parts and a short last one.
    let data = noise((12 << 20) + 12_345);
    let digest = hex(&sha256(&data));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let (sent, options) = recorder();
    let put = PutOptions {
        content_type: Some("application/x-parts".to_owned()),
        ..PutOptions::default()
    };

    let info = client
        .put_file_multipart("parts", "big.bin", &path, &put, &options)
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.sha256, digest);
    assert!(info.etag.ends_with("-3\""), "{}", info.etag);
    assert_eq!(info.content_type, "application/x-parts");
    assert_eq!(taken(&sent), [1, 2, 3]);
    let back = client.get_object("parts", "big.bin").await.unwrap();
    assert!(back == data, "the object differs from the file");

    // An upload cut off after part 1, with a part 2 of other bytes: resuming keeps part 1,
    // replaces part 2 and sends part 3.
    let upload = client
        .create_upload("parts", "resumed.bin", &PutOptions::default())
        .await
        .unwrap();
    let first = bytes::Bytes::copy_from_slice(&data[..5 << 20]);
    client
        .upload_part("parts", &upload.upload_id, 1, first)
        .await
        .unwrap();
    let wrong = bytes::Bytes::from(vec![0u8; 5 << 20]);
    client
        .upload_part("parts", &upload.upload_id, 2, wrong)
        .await
        .unwrap();
    let resumed = client
        .resume_file_upload("parts", &upload.upload_id, &path, &put, &options)
        .await
        .unwrap();
    assert_eq!(taken(&sent), [2, 3]);
    assert_eq!(resumed.sha256, digest);
    assert_eq!(resumed.etag, info.etag, "same parts, same ETag");

    // A completed upload is gone; resuming it says so and names it.
    let again = client
        .resume_file_upload("parts", &upload.upload_id, &path, &put, &options)
        .await;
    match again {
        Err(Error::UploadInterrupted { upload_id, source }) => {
            assert_eq!(upload_id, upload.upload_id);
            assert_eq!(source.code(), Some(ErrorCode::UploadNotFound));
        }
        other => panic!("expected an interrupted upload, got {other:?}"),
    }

    // From a reader, parts are read in turn and sent side by side.
    let reader = std::io::Cursor::new(data.clone());
    let streamed = client
        .put_reader_multipart("parts", "reader.bin", reader, &put, &options)
        .await
        .unwrap();
    assert_eq!(streamed.sha256, digest);
    assert_eq!(streamed.etag, info.etag);
    assert_eq!(taken(&sent), [1, 2, 3]);

    // A file that is not there leaves no upload behind.
    let missing = client
        .put_file_multipart("parts", "none.bin", dir.path().join("none"), &put, &options)
        .await;
    assert!(matches!(missing, Err(Error::Io(_))), "{missing:?}");
}

backend_tests!(
    files_stream_up_and_down_and_copy_server_side,
    listings_follow_cursors_and_signed_urls_need_no_key,
    multipart_uploads_send_parts_side_by_side_and_resume,
);
