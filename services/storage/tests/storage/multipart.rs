//! Multipart uploads: completion, resumption, abort and expiry.

use super::common::*;

async fn multipart_uploads_complete_resume_abort_and_expire(mut backend: TestBackend) {
    backend.config.storage_min_part_bytes = 5;
    backend.config.storage_upload_expiry = std::time::Duration::from_secs(3600);
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let start = |object: &str| {
        let request = server
            .http
            .post(server.url("/buckets/files/uploads"))
            .bearer_auth(&key)
            .json(
                &json!({"key": object, "content_type": "text/plain", "metadata": {"kind": "log"}}),
            );
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            response.json::<Value>().await.unwrap()["upload_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let part = |upload: &str, number: u32, body: &'static str| {
        let url = server.url(&format!("/buckets/files/uploads/{upload}/parts/{number}"));
        server.http.put(url).bearer_auth(&key).body(body).send()
    };

    let upload = start("logs/big.txt").await;
    // Parts in any order and at once; part 1 sent again, as after a dropped connection.
    let (second, first) = tokio::join!(part(&upload, 2, "bbb"), part(&upload, 1, "aaaaaaaaaa"));
    assert_eq!(
        (second.unwrap().status(), first.unwrap().status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let again: Value = part(&upload, 1, "AAAAAAAAAA")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        server.gauges(&project).await,
        (0, 13),
        "pending parts count against stored bytes"
    );
    let listed: Value = server
        .http
        .get(server.url(&format!("/buckets/files/uploads/{upload}/parts")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts = listed.as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["etag"], again["etag"]);

    let complete = |upload: &str, parts: Value| {
        let url = server.url(&format!("/buckets/files/uploads/{upload}/complete"));
        server
            .http
            .post(url)
            .bearer_auth(&key)
            .json(&json!({"parts": parts}))
            .send()
    };
    let etag_1 = parts[0]["etag"].clone();
    let etag_2 = parts[1]["etag"].clone();
    for bad in [
        json!([{"part_number": 1, "etag": "\"nope\""}, {"part_number": 2, "etag": etag_2}]),
        json!([{"part_number": 2, "etag": etag_2}, {"part_number": 1, "etag": etag_1}]),
        json!([{"part_number": 2, "etag": etag_2}, {"part_number": 3, "etag": etag_2}]),
        json!([]),
    ] {
        assert_eq!(
            code(complete(&upload, bad).await.unwrap()).await.1,
            "invalid_part"
        );
    }
    let done = complete(
        &upload,
        json!([{"part_number": 1, "etag": etag_1}, {"part_number": 2, "etag": etag_2}]),
    )
    .await
    .unwrap();
    assert_eq!(done.status(), 200);
    let info: Value = done.json().await.unwrap();
    assert!(info["etag"].as_str().unwrap().ends_with("-2\""), "{info}");
    assert_eq!(info["metadata"]["kind"], "log");
    let got = server.get(&key, "files", "logs/big.txt").await;
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(got.text().await.unwrap(), "AAAAAAAAAAbbb");
    assert_eq!(server.gauges(&project).await, (1, 13));
    assert_eq!(server.blob_files().await, 1, "the parts' blobs are gone");
    assert_eq!(
        code(part(&upload, 3, "x").await.unwrap()).await.1,
        "upload_not_found"
    );

    // A part below the minimum is refused anywhere but last.
    let small = start("small.txt").await;
    let a: Value = part(&small, 1, "abc").await.unwrap().json().await.unwrap();
    let b: Value = part(&small, 2, "defgh")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts =
        json!([{"part_number": 1, "etag": a["etag"]}, {"part_number": 2, "etag": b["etag"]}]);
    assert_eq!(
        code(complete(&small, parts).await.unwrap()).await.1,
        "invalid_part"
    );

    // Abort releases the parts; so does expiry.
    let url = server.url(&format!("/buckets/files/uploads/{small}"));
    let aborted = server
        .http
        .delete(url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.gauges(&project).await, (1, 13));
    let stale = start("stale.txt").await;
    part(&stale, 1, "zzzz").await.unwrap();
    assert_eq!(server.gauges(&project).await, (1, 17));
    sqlx::query("UPDATE uploads SET expires_at = 0 WHERE id = $1")
        .bind(&stale)
        .execute(server.shared.store().pool())
        .await
        .unwrap();
    assert_eq!(
        plinth_storage::multipart::sweep_once(&server.storage)
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.gauges(&project).await, (1, 13));
    assert_eq!(server.blob_files().await, 1);
    assert_eq!(
        code(part(&stale, 2, "x").await.unwrap()).await.1,
        "upload_not_found"
    );
}

plinth_shared::all_backend_tests!(multipart_uploads_complete_resume_abort_and_expire,);
