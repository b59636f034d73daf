//! Indexes: created with a schema, listed, read with their stats, reconfigured, deleted;
//! bad schemas, the index quota and other projects refused.

use crate::common::*;

async fn indexes_are_created_listed_read_and_deleted(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let created = server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    assert_eq!(created["name"], "products");
    assert_eq!(created["schema"]["primary_key"], "id");
    assert_eq!(created["settings"]["typo_tolerance"]["one_typo_from"], 5);
    let (status, code, _) = server
        .refused(&key, Method::POST, "/indexes", Some(products()))
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "index_name_taken")
    );

    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents?wait=true",
            Some(json!([{"id": "a", "title": "A lamp"}, {"id": "b", "title": "A desk"}])),
        )
        .await;
    let read = server
        .ok(&key, Method::GET, "/indexes/products", None)
        .await;
    assert_eq!(read["stats"]["documents"], 2);
    assert!(read["stats"]["bytes"].as_u64().unwrap() > 0);
    let listed = server.ok(&key, Method::GET, "/indexes", None).await;
    assert_eq!(listed["indexes"].as_array().unwrap().len(), 1);
    assert!(listed["indexes"][0].get("stats").is_none());

    let settings = json!({"stop_words": ["the"], "typo_tolerance": {"enabled": false}});
    let updated = server
        .ok(
            &key,
            Method::PUT,
            "/indexes/products/settings",
            Some(settings),
        )
        .await;
    assert_eq!(updated["settings"]["stop_words"], json!(["the"]));
    let read = server
        .ok(&key, Method::GET, "/indexes/products", None)
        .await;
    assert_eq!(read["settings"]["typo_tolerance"]["enabled"], false);

    let (status, _) = server
        .call(&key, Method::DELETE, "/indexes/products", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, code, _) = server
        .refused(&key, Method::GET, "/indexes/products", None)
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "index_not_found")
    );
    // The name is free again, and the new index starts empty.
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    let read = server
        .ok(&key, Method::GET, "/indexes/products", None)
        .await;
    assert_eq!(read["stats"]["documents"], 0);
}

async fn bad_schemas_and_names_are_refused(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let field = |extra: Value| {
        let mut f = json!({"name": "f", "type": "text"});
        f.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        f
    };
    let schemas = [
        // The primary key is missing, or of a type that cannot be one.
        json!({"primary_key": "id", "fields": [{"name": "title", "type": "text"}]}),
        json!({"primary_key": "f", "fields": [field(json!({}))]}),
        // A name twice, a reserved name, a bad name.
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}, {"name": "id", "type": "text"}]}),
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}, {"name": "_source", "type": "text"}]}),
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}, {"name": "a-b", "type": "text"}]}),
        // Options the type cannot have.
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}, field(json!({"sortable": true}))]}),
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword", "analyzer": "english"}]}),
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}, {"name": "p", "type": "float", "facet": true}]}),
        // A default search field that is not an indexed text field.
        json!({"primary_key": "id", "fields": [{"name": "id", "type": "keyword"}], "default_search_fields": ["id"]}),
    ];
    for schema in schemas {
        let body = json!({"name": "bad", "schema": schema});
        let (status, code, body) = server
            .refused(&key, Method::POST, "/indexes", Some(body))
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_schema"),
            "{body}"
        );
    }
    let unknown_type = json!({"name": "bad", "schema": {"primary_key": "id", "fields": [{"name": "id", "type": "uuid"}]}});
    let (status, _, _) = server
        .refused(&key, Method::POST, "/indexes", Some(unknown_type))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut bad_name = products();
    bad_name["name"] = json!("no/slash");
    let (status, code, _) = server
        .refused(&key, Method::POST, "/indexes", Some(bad_name))
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_index_name")
    );
    // Nothing of them was made.
    let listed = server.ok(&key, Method::GET, "/indexes", None).await;
    assert_eq!(listed["indexes"], json!([]));
}

async fn the_index_quota_holds(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        indexes: Some(1),
        ..Quotas::default()
    };
    let key = server.tenant("small", quotas).await;
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    let mut second = products();
    second["name"] = json!("second");
    let (status, code, _) = server
        .refused(&key, Method::POST, "/indexes", Some(second.clone()))
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "quota_exceeded")
    );
    // Deleting gives the index back.
    server
        .call(&key, Method::DELETE, "/indexes/products", None)
        .await;
    server
        .ok(&key, Method::POST, "/indexes", Some(second))
        .await;
}

async fn another_project_cannot_reach_an_index(backend: TestBackend) {
    let server = Server::start(backend).await;
    let owner = server.tenant("owner", Quotas::default()).await;
    let other = server.tenant("other", Quotas::default()).await;
    with_products(&server, &owner, json!([{"id": "a", "title": "lamp"}])).await;
    let routes = [
        (Method::GET, "/indexes/products", None),
        (Method::PUT, "/indexes/products/settings", Some(json!({}))),
        (
            Method::POST,
            "/indexes/products/documents",
            Some(json!([{"id": "x"}])),
        ),
        (Method::GET, "/indexes/products/documents/a", None),
        (
            Method::POST,
            "/indexes/products/documents/delete",
            Some(json!({"ids": ["a"]})),
        ),
        (
            Method::POST,
            "/indexes/products/search",
            Some(json!({"q": "lamp"})),
        ),
        (Method::DELETE, "/indexes/products", None),
    ];
    for (method, path, body) in routes {
        let (status, code, _) = server.refused(&other, method, path, body).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "index_not_found"),
            "{path}"
        );
    }
    let listed = server.ok(&other, Method::GET, "/indexes", None).await;
    assert_eq!(listed["indexes"], json!([]));
    // The owner's index is as it was.
    let (ids, _) = server.ids(&owner, "products", json!({"q": "lamp"})).await;
    assert_eq!(ids, [json!("a")]);
}

plinth_shared::backend_tests!(
    indexes_are_created_listed_read_and_deleted,
    bad_schemas_and_names_are_refused,
    the_index_quota_holds,
    another_project_cannot_reach_an_index,
);
