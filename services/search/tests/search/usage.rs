//! The documents quota, counted exactly across a project's indexes, and the usage metered.

use plinth_types::console::UsageQuery;

use crate::common::*;

async fn project_id(server: &Server, name: &str) -> String {
    let projects = server
        .admin
        .list_projects(&Default::default())
        .await
        .unwrap();
    projects
        .items
        .into_iter()
        .find(|p| p.name == name)
        .unwrap()
        .id
}

async fn documents_gauge(server: &Server, project: &str) -> u64 {
    server.admin.get_quotas(project).await.unwrap().usage["documents"]
}

fn docs(ids: &[u32]) -> Value {
    json!(
        ids.iter()
            .map(|n| json!({"id": n.to_string(), "title": format!("widget {n}")}))
            .collect::<Vec<_>>()
    )
}

async fn upsert(server: &Server, key: &str, index: &str, ids: &[u32]) -> (StatusCode, Value) {
    server
        .call(
            key,
            Method::POST,
            &format!("/indexes/{index}/documents?wait=true"),
            Some(docs(ids)),
        )
        .await
}

async fn the_documents_quota_counts_what_the_indexes_hold(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        documents: Some(5),
        ..Quotas::default()
    };
    let key = server.tenant("shop", quotas).await;
    let project = project_id(&server, "shop").await;
    with_products(&server, &key, docs(&[1, 2, 3])).await;
    assert_eq!(documents_gauge(&server, &project).await, 3);

    // Three more would make six: refused, and nothing of the batch applied.
    let (status, body) = upsert(&server, &key, "products", &[4, 5, 6]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("quota_exceeded")),
        "{body}"
    );
    assert_eq!(server.ids(&key, "products", json!({})).await.1, 3);
    // Replacing documents adds none, so it fits even at the limit.
    upsert(&server, &key, "products", &[4, 5]).await;
    assert_eq!(documents_gauge(&server, &project).await, 5);
    let (status, _) = upsert(&server, &key, "products", &[1, 2, 3, 4, 5]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = upsert(&server, &key, "products", &[5, 6]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "6 is new");
    assert_eq!(documents_gauge(&server, &project).await, 5);

    // Deleting gives room back; the quota covers every index of the project.
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents/delete?wait=true",
            Some(json!({"ids": ["1", "2", "nothing"]})),
        )
        .await;
    assert_eq!(documents_gauge(&server, &project).await, 3);
    let mut other = products();
    other["name"] = json!("other");
    server.ok(&key, Method::POST, "/indexes", Some(other)).await;
    let (status, _) = upsert(&server, &key, "other", &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = upsert(&server, &key, "other", &[1, 2]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(documents_gauge(&server, &project).await, 5);
    // Deleting an index gives its documents back.
    server
        .ok(&key, Method::DELETE, "/indexes/products", None)
        .await;
    assert_eq!(documents_gauge(&server, &project).await, 2);

    // Documents indexed and queries are metered.
    server.ids(&key, "other", json!({"q": "widget"})).await;
    let usage = server
        .admin
        .usage(&project, &UsageQuery::default())
        .await
        .unwrap();
    let metered = |metric: &str| -> u64 {
        usage
            .items
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| r.value)
            .sum()
    };
    // 3 + 2 + 5 + 2 applied; refused batches are not counted.
    assert_eq!(metered("documents_indexed"), 12, "{usage:?}");
    assert_eq!(metered("search_queries"), 2, "{usage:?}");
}

async fn a_reservation_cut_short_is_settled_when_the_index_opens(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        documents: Some(10),
        ..Quotas::default()
    };
    let key = server.tenant("shop", quotas).await;
    let project = project_id(&server, "shop").await;
    with_products(&server, &key, docs(&[1, 2, 3])).await;
    // What a crash between reserving room and settling leaves: room for seven more held by
    // a write that never committed.
    let store = server.backend.store().await;
    sqlx::query("UPDATE search_indexes SET pending = 7")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE quota_gauges SET used = used + 7 WHERE metric = 'documents'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(documents_gauge(&server, &project).await, 10);
    let server = server.restart().await;
    // Opening the index settles it: the gauge is what the index holds.
    assert_eq!(server.ids(&key, "products", json!({})).await.1, 3);
    assert_eq!(documents_gauge(&server, &project).await, 3);
    let (status, body) = upsert(&server, &key, "products", &[4, 5, 6, 7, 8, 9, 10]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(documents_gauge(&server, &project).await, 10);
}

async fn the_index_bytes_quota_refuses_writes_past_it(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let project = project_id(&server, "shop").await;
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    let size = |index: Value| index["stats"]["bytes"].as_u64().unwrap();
    let empty = size(
        server
            .ok(&key, Method::GET, "/indexes/products", None)
            .await,
    );
    // Room for the empty index and a byte more.
    let quotas = Quotas {
        index_bytes: Some(empty + 1),
        ..Quotas::default()
    };
    server.admin.set_quotas(&project, &quotas).await.unwrap();
    // Below the limit, a write goes in; its commit is what crosses it.
    let (status, body) = upsert(&server, &key, "products", &[1, 2, 3]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bytes = size(
        server
            .ok(&key, Method::GET, "/indexes/products", None)
            .await,
    );
    assert!(bytes > empty + 1);
    let report = server.admin.get_quotas(&project).await.unwrap();
    assert_eq!(
        report.usage["index_bytes"], bytes,
        "the gauge is the files' size"
    );
    let (status, body) = upsert(&server, &key, "products", &[4]).await;
    assert_eq!(
        (
            status,
            body["code"].as_str(),
            body["details"]["quota"].as_str()
        ),
        (
            StatusCode::FORBIDDEN,
            Some("quota_exceeded"),
            Some("index_bytes")
        ),
        "{body}"
    );
    // Deleting still works; deleting the index gives its bytes back.
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents/delete?wait=true",
            Some(json!({"ids": ["1"]})),
        )
        .await;
    server
        .ok(&key, Method::DELETE, "/indexes/products", None)
        .await;
    let report = server.admin.get_quotas(&project).await.unwrap();
    assert_eq!(report.usage["index_bytes"], 0);
}

plinth_shared::backend_tests!(
    the_index_bytes_quota_refuses_writes_past_it,
    the_documents_quota_counts_what_the_indexes_hold,
    a_reservation_cut_short_is_settled_when_the_index_opens,
);
