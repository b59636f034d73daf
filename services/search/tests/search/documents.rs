//! Documents: upserted by primary key, read by id, deleted; bad documents refuse their
//! batch or are skipped; acknowledged writes survive a restart.

use crate::common::*;

async fn documents_are_upserted_read_replaced_and_deleted(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let lamp = json!({
        "id": "lamp-1", "title": "Desk lamp", "tags": ["home", "light"], "price": 19.5,
        "stock": 3, "listed": true, "added": "2026-12-01T10:00:00Z", "secret": "s3"
    });
    with_products(
        &server,
        &key,
        json!([lamp, {"id": "desk-1", "title": "Oak desk"}]),
    )
    .await;
    let read = server
        .ok(
            &key,
            Method::GET,
            "/indexes/products/documents/lamp-1",
            None,
        )
        .await;
    let mut stored = lamp.clone();
    stored.as_object_mut().unwrap().remove("secret");
    assert_eq!(read, stored, "every stored field, and not the unstored one");

    // The same id replaces the document: the old words find nothing.
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents?wait=true",
            Some(json!([{"id": "lamp-1", "title": "Floor lamp"}])),
        )
        .await;
    let read = server
        .ok(
            &key,
            Method::GET,
            "/indexes/products/documents/lamp-1",
            None,
        )
        .await;
    assert_eq!(read, json!({"id": "lamp-1", "title": "Floor lamp"}));
    assert_eq!(
        server
            .ids(&key, "products", json!({"q": "desk lamp"}))
            .await
            .1,
        0
    );
    assert_eq!(
        server.ids(&key, "products", json!({"q": "floor"})).await.0,
        [json!("lamp-1")]
    );
    let stats = server
        .ok(&key, Method::GET, "/indexes/products", None)
        .await;
    assert_eq!(stats["stats"]["documents"], 2);

    let deleted = server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents/delete?wait=true",
            Some(json!({"ids": ["lamp-1", "never-was"]})),
        )
        .await;
    assert_eq!(deleted["applied"], 2);
    let (status, code, _) = server
        .refused(
            &key,
            Method::GET,
            "/indexes/products/documents/lamp-1",
            None,
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "document_not_found")
    );
    assert_eq!(
        server.ids(&key, "products", json!({"q": ""})).await.0,
        [json!("desk-1")]
    );
}

async fn bad_documents_refuse_the_batch_or_are_skipped(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, json!([{"id": "kept", "title": "kept"}])).await;
    let bad = [
        (json!({"title": "no id"}), "id"),
        (json!({"id": "", "title": "empty id"}), "id"),
        (json!({"id": "x", "price": "cheap"}), "price"),
        (json!({"id": "x", "stock": 1.5}), "stock"),
        (json!({"id": "x", "listed": "yes"}), "listed"),
        (json!({"id": "x", "added": "yesterday"}), "added"),
        (json!({"id": "x", "title": 7}), "title"),
        (json!({"id": "x", "colour": "red"}), "colour"),
        (json!("not an object"), ""),
    ];
    for (document, field) in bad {
        let batch = json!([{"id": "fine", "title": "fine"}, document]);
        let (status, code, body) = server
            .refused(
                &key,
                Method::POST,
                "/indexes/products/documents?wait=true",
                Some(batch),
            )
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_document")
        );
        assert_eq!(body["details"]["position"], 1, "{body}");
        assert_eq!(body["details"]["field"], field, "{body}");
    }
    // Nothing of the refused batches was applied.
    let (ids, total) = server.ids(&key, "products", json!({"q": ""})).await;
    assert_eq!((ids, total), (vec![json!("kept")], 1));

    // With `on_error=skip`, the rest of the batch is applied and the bad ones listed.
    let batch = json!([{"id": "a", "title": "first"}, {"id": "b", "price": "x"}, {"id": "c", "title": "third"}]);
    let written = server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents?wait=true&on_error=skip",
            Some(batch),
        )
        .await;
    assert_eq!(written["applied"], 2);
    assert_eq!(written["rejected"][0]["position"], 1);
    assert_eq!(written["rejected"][0]["field"], "price");
    assert_eq!(
        server.ids(&key, "products", json!({"q": "third"})).await.0,
        [json!("c")]
    );
    let (status, code, _) = server
        .refused(
            &key,
            Method::POST,
            "/indexes/products/documents",
            Some(json!([])),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    let (status, code, _) = server
        .refused(
            &key,
            Method::POST,
            "/indexes/products/documents?on_error=maybe",
            Some(json!([{"id": "z"}])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{code}");
}

async fn acknowledged_writes_survive_a_restart(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    // Not waiting for visibility: durable is enough to be answered.
    let batch: Vec<Value> = (0..50)
        .map(|n| json!({"id": format!("doc-{n}"), "title": format!("item number {n}")}))
        .collect();
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents",
            Some(json!(batch)),
        )
        .await;
    let server = server.restart().await;
    let (_, total) = server.ids(&key, "products", json!({"q": "item"})).await;
    assert_eq!(total, 50);
    let read = server
        .ok(&key, Method::GET, "/indexes/products/documents/doc-7", None)
        .await;
    assert_eq!(read["title"], "item number 7");
}

async fn writes_become_searchable_within_the_refresh_interval(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents",
            Some(json!([{"id": "a", "title": "eventually"}])),
        )
        .await;
    // The default refresh interval is a second.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if server
            .ids(&key, "products", json!({"q": "eventually"}))
            .await
            .1
            == 1
        {
            break;
        }
        assert!(std::time::Instant::now() < until, "never searchable");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

plinth_shared::backend_tests!(
    documents_are_upserted_read_replaced_and_deleted,
    bad_documents_refuse_the_batch_or_are_skipped,
    acknowledged_writes_survive_a_restart,
    writes_become_searchable_within_the_refresh_interval,
);
