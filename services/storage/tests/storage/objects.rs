//! Objects: round trips with their headers, ranges and quotas, bad input, concurrent uploads against a quota, conditional requests and copies.

use super::common::*;

async fn objects_round_trip_with_headers_ranges_and_quotas(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;

    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let put = server
        .http
        .put(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("content-type", "application/x-report")
        .header("cache-control", "max-age=60")
        .header("x-plinth-meta-owner", "user-42")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let info: Value = put.json().await.unwrap();
    let md5_hex = format!("\"{:x}\"", md5_of(&body));
    assert_eq!(info["etag"], md5_hex.as_str());
    assert_eq!(info["size"], 100_000);
    assert_eq!(info["metadata"]["owner"], "user-42");

    let got = server.get(&key, "files", "reports/2024/q1.bin").await;
    assert_eq!(got.status(), 200);
    let headers = got.headers().clone();
    assert_eq!(headers["etag"], md5_hex.as_str());
    assert_eq!(headers["content-type"], "application/x-report");
    assert_eq!(headers["cache-control"], "max-age=60");
    assert_eq!(headers["x-plinth-meta-owner"], "user-42");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-length"], "100000");
    assert!(headers.contains_key("last-modified"));
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    // Objects are served byte for byte even to a client that accepts gzip.
    let raw = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(raw.headers().get("content-encoding").is_none());
    assert_eq!(raw.headers()["content-length"], "100000");

    let ranged = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.headers()["content-range"], "bytes 1000-1999/100000");
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), &body[1000..2000]);
    let outside = server
        .http
        .get(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.headers()["content-range"], "bytes */100000");
    assert_eq!(
        code(outside).await,
        (
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable".into()
        )
    );

    let head = server
        .http
        .head(server.url("/buckets/files/objects/reports/2024/q1.bin"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            head.status(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (StatusCode::OK, "100000")
    );

    // Active content is never served as a page on the API's origin.
    let page = server
        .http
        .put(server.url("/buckets/files/objects/x.html"))
        .bearer_auth(&key)
        .header("content-type", "text/html")
        .body("<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = server.get(&key, "files", "x.html").await;
    assert_eq!(page.headers()["content-security-policy"], "sandbox");
    assert_eq!(page.headers()["content-disposition"], "attachment");

    assert_eq!(server.gauges(&project).await, (2, 100_000 + 25));
    // An overwrite counts the size difference, not a second object.
    assert_eq!(
        server
            .put(&key, "files", "x.html", vec![b'a'; 5])
            .await
            .status(),
        200
    );
    assert_eq!(server.gauges(&project).await, (2, 100_005));
    assert_eq!(server.blob_files().await, 2, "the replaced blob is removed");

    for object in ["reports/2024/q1.bin", "x.html"] {
        let deleted = server
            .http
            .delete(server.url(&format!("/buckets/files/objects/{object}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            code(server.get(&key, "files", object).await).await.1,
            "object_not_found"
        );
    }
    assert_eq!(server.gauges(&project).await, (0, 0));
    assert_eq!(server.blob_files().await, 0);
    let again = server
        .http
        .delete(server.url("/buckets/files/objects/x.html"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "deleting a missing key succeeds, as in S3"
    );

    let events = server.events().await;
    let kinds: Vec<_> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "object.created",
            "object.created",
            "object.created",
            "object.deleted",
            "object.deleted"
        ]
    );
}

async fn bad_input_is_refused_and_stores_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server
        .tenant(
            "alpha",
            Quotas {
                object_size_max: Some(10_000),
                ..Quotas::default()
            },
        )
        .await;
    server
        .create_bucket(&key, json!({"name": "files", "max_object_size": 5000}))
        .await;

    let long_key = "k".repeat(1025);
    for (object, expected) in [
        // Escaped so that the client does not resolve the dot segments itself.
        ("a/..%2Fb", "invalid_object_key"),
        ("a/.%2Fb", "invalid_object_key"),
        ("%2Fleading", "invalid_object_key"),
        ("nul%00byte", "invalid_object_key"),
        ("line%0Abreak", "invalid_object_key"),
        ("bad%FFutf8", "invalid_object_key"),
        (long_key.as_str(), "invalid_object_key"),
    ] {
        let response = server.put(&key, "files", object, b"x".to_vec()).await;
        assert_eq!(
            code(response).await,
            (StatusCode::BAD_REQUEST, expected.to_owned()),
            "{object}"
        );
    }

    let body = b"hello".to_vec();
    let wrong_md5 = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_md5).await.1, "checksum_mismatch");
    let wrong_sha = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("x-plinth-checksum-sha256", "00".repeat(32))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_sha).await.1, "checksum_mismatch");
    let garbled = server
        .http
        .put(server.url("/buckets/files/objects/a"))
        .bearer_auth(&key)
        .header("content-md5", "not base64")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(garbled).await.1, "invalid_header");

    // The bucket's 5000 bytes win over the project's 10000: refused by Content-Length up
    // front, and by counting when the body streams without one.
    let oversize = server.put(&key, "files", "big", vec![0; 5001]).await;
    assert_eq!(
        code(oversize).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "object_too_large".into())
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![0u8; 1000])).collect();
    let streamed = server
        .http
        .put(server.url("/buckets/files/objects/big"))
        .bearer_auth(&key)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(code(streamed).await.1, "object_too_large");
    let missing_bucket = server.put(&key, "nope", "a", b"x".to_vec()).await;
    assert_eq!(code(missing_bucket).await.1, "bucket_not_found");

    assert_eq!(server.gauges(&project).await, (0, 0));
    assert_eq!(
        server.blob_files().await,
        0,
        "no blob, not even a temporary one, is left"
    );
    assert!(server.events().await.is_empty());
}

async fn concurrent_uploads_never_overshoot_the_quota(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        stored_bytes: Some(10_000),
        ..Quotas::default()
    };
    let (project, key) = server.tenant("alpha", quotas).await;
    server.create_bucket(&key, json!({"name": "files"})).await;

    let names: Vec<String> = (0..64).map(|i| format!("o-{i}")).collect();
    let uploads = names
        .iter()
        .map(|name| server.put(&key, "files", name, vec![7; 1000]));
    let responses = futures::future::join_all(uploads).await;
    let mut stored = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => stored += 1,
            StatusCode::FORBIDDEN => assert_eq!(code(response).await.1, "quota_exceeded"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(stored, 10, "exactly the quota's worth is stored");
    assert_eq!(server.gauges(&project).await, (10, 10_000));
    assert_eq!(
        server.blob_files().await,
        10,
        "refused uploads leave no blob"
    );
}

async fn conditional_requests_behave_as_in_s3(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let url = server.url("/buckets/files/objects/doc");
    let put = |body: &'static str, condition: Option<(&'static str, String)>| {
        let mut request = server.http.put(&url).bearer_auth(&key).body(body);
        if let Some((name, value)) = condition {
            request = request.header(name, value);
        }
        request.send()
    };

    // Create-only: the first wins, the second gets 412, even when they race.
    let racing =
        futures::future::join_all((0..8).map(|_| put("v1", Some(("if-none-match", "*".into())))))
            .await;
    let created = racing
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 200)
        .count();
    assert_eq!(created, 1, "exactly one create-only PUT succeeds");
    for response in racing
        .into_iter()
        .map(Result::unwrap)
        .filter(|r| r.status() != 200)
    {
        assert_eq!(
            code(response).await,
            (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed".into()
            )
        );
    }
    let v1: Value = server.get(&key, "files", "doc").await.headers()["etag"]
        .to_str()
        .map(|e| json!(e))
        .unwrap();
    let v1 = v1.as_str().unwrap().to_owned();

    let stale = put("v2", Some(("if-match", "\"0000\"".into())))
        .await
        .unwrap();
    assert_eq!(code(stale).await.1, "precondition_failed");
    assert_eq!(
        put("v2", Some(("if-match", v1.clone())))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        server.get(&key, "files", "doc").await.text().await.unwrap(),
        "v2"
    );

    let get = |name: &'static str, value: String| {
        server
            .http
            .get(&url)
            .bearer_auth(&key)
            .header(name, value)
            .send()
    };
    let current = server.get(&key, "files", "doc").await;
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let modified = current.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_owned();
    let not_modified = get("if-none-match", etag.clone()).await.unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["etag"], etag.as_str());
    assert!(not_modified.bytes().await.unwrap().is_empty());
    assert_eq!(
        get("if-none-match", v1.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        get("if-modified-since", modified.clone())
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        get("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        code(get("if-match", v1).await.unwrap()).await.1,
        "precondition_failed"
    );
    let long_ago = "Thu, 01 Jan 1970 00:00:00 GMT".to_owned();
    assert_eq!(
        code(get("if-unmodified-since", long_ago).await.unwrap())
            .await
            .1,
        "precondition_failed"
    );
    assert_eq!(server.gauges(&project).await, (1, 2));
}

async fn copies_are_server_side_and_stay_in_the_project(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    let (_, stranger) = server.tenant("beta", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "src"})).await;
    server.create_bucket(&key, json!({"name": "dst"})).await;
    server
        .create_bucket(&stranger, json!({"name": "dst"}))
        .await;
    let original = server
        .http
        .put(server.url("/buckets/src/objects/a.txt"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .header("x-plinth-meta-owner", "42")
        .body("copy me")
        .send()
        .await
        .unwrap();
    let etag = original.headers()["etag"].to_str().unwrap().to_owned();

    let copy = |credential: &str, source: &str| {
        server
            .http
            .put(server.url("/buckets/dst/objects/b.txt"))
            .bearer_auth(credential)
            .header("x-plinth-copy-source", source)
            .send()
    };
    let copied = copy(&key, "src/a.txt").await.unwrap();
    assert_eq!(copied.status(), 200);
    assert_eq!(copied.headers()["etag"], etag.as_str());
    let got = server.get(&key, "dst", "b.txt").await;
    assert_eq!(got.headers()["x-plinth-meta-owner"], "42");
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().await.unwrap(), "copy me");
    assert_eq!(server.gauges(&project).await, (2, 14));

    // The copy does not depend on its source.
    server
        .http
        .delete(server.url("/buckets/src/objects/a.txt"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        server.get(&key, "dst", "b.txt").await.text().await.unwrap(),
        "copy me"
    );

    assert_eq!(
        code(copy(&key, "src/a.txt").await.unwrap()).await.1,
        "object_not_found"
    );
    assert_eq!(
        code(copy(&key, "no-slash").await.unwrap()).await.1,
        "invalid_header"
    );
    // Another project cannot name this project's objects as a source.
    assert_eq!(
        code(copy(&stranger, "dst/b.txt").await.unwrap()).await.1,
        "object_not_found"
    );
    assert_eq!(
        code(copy(&stranger, "src/a.txt").await.unwrap()).await.1,
        "bucket_not_found"
    );
}

plinth_shared::all_backend_tests!(
    objects_round_trip_with_headers_ranges_and_quotas,
    bad_input_is_refused_and_stores_nothing,
    concurrent_uploads_never_overshoot_the_quota,
    conditional_requests_behave_as_in_s3,
    copies_are_server_side_and_stay_in_the_project,
);
