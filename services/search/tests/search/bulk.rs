//! Bulk writes: NDJSON imports streamed past the JSON body limit, and deletion by filter.

use crate::common::*;

/// `count` products from `first`, each with a body of some 200 bytes, as NDJSON lines.
fn lines(first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|n| {
            json!({
                "id": format!("p{n}"), "title": format!("widget {n}"), "stock": n % 10,
                "body": format!("{n} {}", "lorem ipsum dolor sit amet ".repeat(7))
            })
            .to_string()
        })
        .collect()
}

async fn import(server: &Server, key: &str, query: &str, body: String) -> (StatusCode, Value) {
    let response = server
        .http
        .post(format!(
            "{}/search/v1/indexes/products/documents/import?{query}",
            server.url
        ))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn ndjson_imports_stream_in_batches(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, json!([{"id": "first", "title": "first"}])).await;

    // Three megabytes, more than the JSON body limit and than one write; blank lines are
    // no documents.
    let mut body = lines(0, 12_000).join("\n");
    body.push_str("\n\n");
    assert!(body.len() > 2 * 1024 * 1024);
    let (status, answer) = import(&server, &key, "wait=true", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["applied"], 12_000);
    assert_eq!(server.ids(&key, "products", json!({})).await.1, 12_001);
    let (hits, _) = server
        .ids(&key, "products", json!({"q": "title:11999"}))
        .await;
    // (Numbers within a typo match too; the exact one ranks first.)
    assert_eq!(hits[0], json!("p11999"));

    // By default one bad line refuses the whole import, naming it.
    let mut refused = lines(20_000, 6_000);
    refused[5_500] = json!({"id": "bad", "stock": "many"}).to_string();
    let (status, answer) = import(&server, &key, "", refused.join("\n")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_document")),
        "{answer}"
    );
    assert_eq!(answer["details"]["position"], 5_500);
    assert_eq!(answer["details"]["field"], "stock");
    assert_eq!(server.ids(&key, "products", json!({})).await.1, 12_001);

    // With on_error=skip the rest goes in and the bad lines are listed.
    let mut skipped = lines(30_000, 100);
    skipped[10] = "{not json".into();
    skipped[20] = json!(["an", "array"]).to_string();
    let (status, answer) =
        import(&server, &key, "on_error=skip&wait=true", skipped.join("\n")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["applied"], 98);
    let positions: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [10, 20]);
    assert_eq!(server.ids(&key, "products", json!({})).await.1, 12_099);
}

async fn documents_are_deleted_by_filter(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let documents: Vec<Value> = (0..10)
        .map(|n| json!({"id": format!("{n}"), "title": "widget", "stock": n}))
        .collect();
    with_products(&server, &key, json!(documents)).await;
    let delete = |body: Value| {
        let server = &server;
        let key = &key;
        async move {
            server
                .call(
                    key,
                    Method::POST,
                    "/indexes/products/documents/delete?wait=true",
                    Some(body),
                )
                .await
        }
    };
    let (status, answer) = delete(json!({"filter": {"field": "stock", "lt": 4}})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["applied"], 4,
        "the deleted documents are counted exactly"
    );
    let (mut left, total) = server.ids(&key, "products", json!({})).await;
    left.sort_by_key(|id| id.as_str().unwrap().parse::<u32>().unwrap());
    assert_eq!(total, 6);
    assert_eq!(left[0], "4");
    let (_, answer) = delete(json!({"filter": {"field": "stock", "lt": 4}})).await;
    assert_eq!(answer["applied"], 0);

    let bad = [
        (
            json!({"filter": {"field": "colour", "eq": "red"}}),
            "invalid_filter",
        ),
        (
            json!({"ids": ["4"], "filter": {"field": "stock", "eq": 4}}),
            "invalid_field",
        ),
        (json!({}), "invalid_field"),
    ];
    for (body, code) in bad {
        let (status, answer) = delete(body.clone()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}: {answer}"
        );
    }
    assert_eq!(
        server.ids(&key, "products", json!({})).await.1,
        6,
        "nothing changed"
    );
}

plinth_shared::backend_tests!(
    ndjson_imports_stream_in_batches,
    documents_are_deleted_by_filter,
);
