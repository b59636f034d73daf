//! Buckets: creation, settings, listing and deletion.

use super::common::*;

async fn buckets_are_managed_per_project(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;

    let created = server
        .create_bucket(&key, json!({"name": "avatars", "max_object_size": 1000}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let bucket: Value = created.json().await.unwrap();
    assert_eq!(
        (bucket["name"].as_str(), bucket["max_object_size"].as_u64()),
        (Some("avatars"), Some(1000))
    );
    assert_eq!(
        code(server.create_bucket(&key, json!({"name": "avatars"})).await)
            .await
            .1,
        "bucket_name_taken"
    );
    for bad in ["ab", "Avatars", "a..b", "-x-", "10.0.0.1"] {
        assert_eq!(
            code(server.create_bucket(&key, json!({"name": bad})).await)
                .await
                .1,
            "invalid_bucket_name",
            "{bad}"
        );
    }
    let bad_types = json!({"name": "docs", "allowed_content_types": ["pdf"]});
    assert_eq!(
        code(server.create_bucket(&key, bad_types).await).await.1,
        "invalid_field"
    );

    server.create_bucket(&key, json!({"name": "docs"})).await;
    let listed: Value = server
        .http
        .get(server.url("/buckets"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["avatars", "docs"]);

    let patched: Value = server
        .http
        .patch(server.url("/buckets/docs"))
        .bearer_auth(&key)
        .json(&json!({"public_read": true, "allowed_content_types": ["application/pdf"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["public_read"], true);

    assert_eq!(
        server
            .put(&key, "docs", "a.pdf", b"%PDF".to_vec())
            .await
            .status(),
        415
    );
    let pdf = server
        .http
        .put(server.url("/buckets/docs/objects/a.pdf"))
        .bearer_auth(&key)
        .header("content-type", "application/pdf")
        .body("%PDF")
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), 200);
    let refused = server
        .http
        .delete(server.url("/buckets/docs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(refused).await.1, "bucket_not_empty");
    let forced = server
        .http
        .delete(server.url("/buckets/docs?force=true"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        code(
            server
                .http
                .get(server.url("/buckets/docs"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
        )
        .await
        .1,
        "bucket_not_found"
    );
}

plinth_shared::all_backend_tests!(buckets_are_managed_per_project,);
