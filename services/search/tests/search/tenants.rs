//! Tenant tokens: a down-scoped token carrying a filter per index that every search and
//! document read made with it must meet, whatever the request asks.

use std::collections::BTreeSet;

use crate::common::*;

/// Six products: three of tenant 42, two of tenant 7, one of none.
fn shared_catalogue() -> Value {
    json!([
        {"id": "1", "title": "red widget", "tenant": "42", "tags": ["red"]},
        {"id": "2", "title": "blue widget", "tenant": "42", "tags": ["blue"]},
        {"id": "3", "title": "red widget deluxe", "tenant": "42", "tags": ["red"]},
        {"id": "4", "title": "red widget", "tenant": "7", "tags": ["red"]},
        {"id": "5", "title": "green widget", "tenant": "7", "tags": ["green"]},
        {"id": "6", "title": "widget", "tags": ["red"]}
    ])
}

async fn found(server: &Server, token: &str, body: Value) -> BTreeSet<String> {
    let page = server
        .ok(token, Method::POST, "/indexes/products/search", Some(body))
        .await;
    let ids: BTreeSet<String> = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len() as u64, page["total"].as_u64().unwrap(), "{page}");
    ids
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn tenant_42() -> Value {
    json!({"scopes": ["search:read"], "search_filters": {"products": {"field": "tenant", "eq": "42"}}})
}

async fn a_tenant_token_sees_only_its_documents(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, shared_catalogue()).await;
    let token = server.token(&key, tenant_42()).await;

    assert_eq!(
        found(&server, &token, json!({"q": "widget"})).await,
        set(&["1", "2", "3"])
    );
    // The request's own filter and query narrow further, never wider.
    let wider = [
        json!({"q": "widget", "filter": {"field": "tenant", "eq": "7"}}),
        json!({"q": "widget", "filter": {"not": {"field": "tenant", "eq": "42"}}}),
        json!({"q": "tenant:7"}),
        json!({"q": "widget -tenant:42"}),
    ];
    for body in wider {
        assert!(
            found(&server, &token, body.clone()).await.is_empty(),
            "{body}"
        );
    }
    let either = json!({"q": "", "filter": {"or": [{"field": "tenant", "eq": "7"}, {"field": "tags", "eq": "red"}]}});
    assert_eq!(found(&server, &token, either).await, set(&["1", "3"]));
    // Facets count only what the token sees.
    let page = server
        .ok(
            &token,
            Method::POST,
            "/indexes/products/search",
            Some(json!({"facets": ["tags"]})),
        )
        .await;
    assert_eq!(
        page["facets"]["tags"],
        json!([{"value": "red", "count": 2}, {"value": "blue", "count": 1}])
    );
    // Reading a document by id meets the filter too; the index's stats stay hidden.
    server
        .ok(&token, Method::GET, "/indexes/products/documents/1", None)
        .await;
    for id in ["4", "6"] {
        let (status, code, _) = server
            .refused(
                &token,
                Method::GET,
                &format!("/indexes/products/documents/{id}"),
                None,
            )
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "document_not_found")
        );
    }
    let index = server
        .ok(&token, Method::GET, "/indexes/products", None)
        .await;
    assert!(index.get("stats").is_none(), "{index}");
    // The key itself still sees everything.
    assert_eq!(found(&server, &key, json!({})).await.len(), 6);
}

async fn tokens_minted_from_a_tenant_token_keep_its_filter(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, shared_catalogue()).await;
    let token = server.token(&key, tenant_42()).await;

    // A token minted from it without filters inherits them.
    let inherited = server.token(&token, json!({"ttl_seconds": 60})).await;
    assert_eq!(
        found(&server, &inherited, json!({})).await,
        set(&["1", "2", "3"])
    );
    // A filter for the same index joins it: both hold.
    let red = json!({"search_filters": {"products": {"field": "tags", "eq": "red"}}});
    let narrower = server.token(&token, red).await;
    assert_eq!(found(&server, &narrower, json!({})).await, set(&["1", "3"]));
    // Asking for another tenant's filter only adds a condition nothing meets.
    let other = json!({"search_filters": {"products": {"field": "tenant", "eq": "7"}}});
    let other = server.token(&token, other).await;
    assert!(found(&server, &other, json!({})).await.is_empty());
    // A filter for every index joins the one for this index.
    let all = json!({"search_filters": {"*": {"field": "tags", "eq": "blue"}}});
    let all = server.token(&token, all).await;
    assert_eq!(found(&server, &all, json!({})).await, set(&["2"]));
    // Writing is not for tenant tokens, nor is widening their scopes.
    let (status, body) = server
        .mint(&token, json!({"scopes": ["search:read", "search:write"]}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("scope_escalation")),
        "{body}"
    );
    let (status, code, _) = server
        .refused(
            &token,
            Method::POST,
            "/indexes/products/documents",
            Some(json!([{"id": "9", "title": "mine", "tenant": "7"}])),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "missing_scope")
    );
}

async fn search_filters_are_checked_and_fail_closed(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, shared_catalogue()).await;
    let mut orders = products();
    orders["name"] = json!("orders");
    orders["schema"]["fields"] =
        json!([{"name": "id", "type": "keyword"}, {"name": "note", "type": "text"}]);
    server
        .ok(&key, Method::POST, "/indexes", Some(orders))
        .await;

    let refused = [
        // The key can write; a token with filters may not.
        json!({"search_filters": {"products": {"field": "tenant", "eq": "42"}}}),
        json!({"scopes": ["search:write"], "search_filters": {"products": {"field": "tenant", "eq": "42"}}}),
        json!({"scopes": ["search:read"], "search_filters": {"products": "tenant = 42"}}),
        json!({"scopes": ["search:read"], "search_filters": {"no/such index": {"field": "tenant", "eq": "42"}}}),
    ];
    for body in refused {
        let (status, answer) = server.mint(&key, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_filter", "{answer}");
        assert_eq!(answer["details"]["parameter"], "search_filters");
    }
    // Nor may a token with filters hold `admin`, which could mint a key without them.
    let projects = server
        .admin
        .list_projects(&Default::default())
        .await
        .unwrap();
    let admin_key = CreateKey {
        name: "admin".into(),
        scopes: vec![Scope::SearchRead, Scope::Admin],
        ..CreateKey::default()
    };
    let admin_key = server
        .admin
        .create_key(&projects.items[0].id, &admin_key)
        .await
        .unwrap()
        .secret;
    let (status, answer) = server
        .mint(
            &admin_key,
            json!({"search_filters": {"products": {"field": "tenant", "eq": "42"}}}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_filter")),
        "{answer}"
    );
    // A token's filter that an index cannot apply refuses the search rather than being
    // left out.
    let every = json!({"scopes": ["search:read"], "search_filters": {"*": {"field": "tenant", "eq": "42"}}});
    let token = server.token(&key, every).await;
    assert_eq!(
        found(&server, &token, json!({})).await,
        set(&["1", "2", "3"])
    );
    let (status, code, body) = server
        .refused(
            &token,
            Method::POST,
            "/indexes/orders/search",
            Some(json!({"q": ""})),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_filter"),
        "{body}"
    );
    assert_eq!(body["details"]["parameter"], "search_filters");
    let (status, _, _) = server
        .refused(&token, Method::GET, "/indexes/orders/documents/1", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

plinth_shared::backend_tests!(
    a_tenant_token_sees_only_its_documents,
    tokens_minted_from_a_tenant_token_keep_its_filter,
    search_filters_are_checked_and_fail_closed,
);
