//! The search methods of the SDK against a real server, started in-process on every
//! metadata backend: typed documents, the bulk loader, the query builder, typed hits.

use plinth_sdk::types::ErrorCode;
use plinth_sdk::types::Scope;
use plinth_sdk::types::console::{CreateKey, CreateProject};
use plinth_sdk::types::search::{CreateIndex, OnError};
use plinth_sdk::{BulkOptions, Client, Filter, Query, WriteOptions};
use plinth_shared::backend_tests;
use plinth_shared::testkit::TestBackend;
use serde::{Deserialize, Serialize};
use serde_json::json;

struct Tenant {
    client: Client,
    _backend: TestBackend,
}

async fn start(backend: TestBackend) -> Tenant {
    let shared = plinth_shared::Shared::open(backend.config.clone(), &backend.admin_token)
        .await
        .unwrap();
    let search = plinth_search::Search::open(shared.clone()).await.unwrap();
    let routes = plinth_console::router(shared.clone()).merge(plinth_search::router(search));
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
        name: "sdk-search".to_owned(),
        quotas: None,
    };
    let project = admin.create_project(&project).await.unwrap();
    let key = CreateKey {
        name: "sdk".to_owned(),
        scopes: vec![Scope::SearchRead, Scope::SearchWrite],
        ..CreateKey::default()
    };
    let key = admin.create_key(&project.id, &key).await.unwrap();
    Tenant {
        client: admin.with_token(key.secret),
        _backend: backend,
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Product {
    id: String,
    title: String,
    price: f64,
    tags: Vec<String>,
}

fn product(n: usize) -> Product {
    Product {
        id: format!("p{n:05}"),
        title: format!(
            "{} lamp {n}",
            if n.is_multiple_of(2) { "desk" } else { "floor" }
        ),
        price: (n % 100) as f64,
        tags: vec![if n.is_multiple_of(3) { "sale" } else { "new" }.to_owned()],
    }
}

async fn create_products(client: &Client) {
    let index: CreateIndex = serde_json::from_value(json!({
        "name": "products",
        "schema": {"primary_key": "id", "fields": [
            {"name": "id", "type": "keyword"},
            {"name": "title", "type": "text"},
            {"name": "price", "type": "float", "sortable": true},
            {"name": "tags", "type": "keyword", "facet": true}
        ]}
    }))
    .unwrap();
    client.create_index(&index).await.unwrap();
}

async fn typed_documents_load_in_bulk_and_come_back_as_hits(backend: TestBackend) {
    let Tenant { client, .. } = &start(backend).await;
    create_products(client).await;
    assert_eq!(client.list_indexes().await.unwrap().len(), 1);

    // 12,000 documents in batches of 2,500, two in flight; two bad ones are left out and
    // named by their position among all added.
    let options = BulkOptions {
        batch_documents: 2_500,
        ..BulkOptions::default()
    };
    let mut loader = client.bulk_loader("products", options);
    for n in 0..12_000 {
        match n {
            4_321 => loader
                .add(&json!({"id": "bad", "price": "free"}))
                .await
                .unwrap(),
            9_999 => loader.add_line(b"{broken").await.unwrap(),
            n => loader.add(&product(n)).await.unwrap(),
        }
    }
    let summary = loader.finish(true).await.unwrap();
    assert_eq!(summary.sent, 12_000);
    assert_eq!(summary.applied, 11_998);
    assert_eq!(summary.rejected_total, 2);
    let positions: Vec<usize> = summary.rejected.iter().map(|r| r.position).collect();
    assert_eq!(positions, [4_321, 9_999]);
    assert_eq!(
        client
            .get_index("products")
            .await
            .unwrap()
            .stats
            .unwrap()
            .documents,
        11_998,
        "finish(true) waits until all is searchable"
    );

    // A typed search through the builder.
    let query = Query::new("desk lamp")
        .filter(Filter::between("price", 10, 20).and(Filter::eq("tags", "sale")))
        .sort_desc("price")
        .facets(["tags"])
        .highlight(["title"])
        .limit(5);
    let page = client.search::<Product>("products", query).await.unwrap();
    assert!(page.total > 5);
    assert_eq!(page.hits.len(), 5);
    for pair in page.hits.windows(2) {
        assert!(pair[0].document.price >= pair[1].document.price);
    }
    for hit in &page.hits {
        let p = &hit.document;
        assert!(
            (10.0..20.0).contains(&p.price) && p.tags == ["sale"],
            "{p:?}"
        );
        assert!(p.title.starts_with("desk"), "{p:?}");
        assert!(hit.highlights["title"].contains("<mark>desk</mark>"));
    }
    assert_eq!(page.facets["tags"][0].count, page.total);
    // The cursor walks on.
    let cursor = page.next.clone().unwrap();
    let more = Query::new("desk lamp")
        .filter(Filter::between("price", 10, 20).and(Filter::eq("tags", "sale")))
        .sort_desc("price")
        .limit(5)
        .after(cursor);
    let next = client.search::<Product>("products", more).await.unwrap();
    assert!(
        next.hits
            .iter()
            .all(|h| !page.hits.iter().any(|p| p.id == h.id))
    );

    let read: Product = client.get_document("products", "p00042").await.unwrap();
    assert_eq!(read, product(42));
    let missing = client
        .get_document::<Product>("products", "nothing")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::DocumentNotFound));
}

async fn writes_and_deletes_through_the_sdk(backend: TestBackend) {
    let Tenant { client, .. } = &start(backend).await;
    create_products(client).await;
    let wait = WriteOptions {
        wait: true,
        ..WriteOptions::default()
    };
    let docs: Vec<Product> = (0..10).map(product).collect();
    let written = client
        .upsert_documents("products", &docs, wait)
        .await
        .unwrap();
    assert_eq!(written.applied, 10);
    // One bad document refuses the batch, unless skipped.
    let bad = vec![json!(product(10)), json!({"id": "x", "price": "n/a"})];
    let refused = client
        .upsert_documents("products", &bad, wait)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidDocument));
    let skip = WriteOptions {
        wait: true,
        on_error: OnError::Skip,
    };
    let skipped = client
        .upsert_documents("products", &bad, skip)
        .await
        .unwrap();
    assert_eq!((skipped.applied, skipped.rejected.len()), (1, 1));
    // NDJSON from any reader.
    let lines: String = (20..30)
        .map(|n| serde_json::to_string(&product(n)).unwrap() + "\n")
        .collect();
    let imported = client
        .import_ndjson("products", std::io::Cursor::new(lines.into_bytes()), wait)
        .await
        .unwrap();
    assert_eq!(imported.applied, 10);
    let all = client
        .search::<Product>("products", Query::new("").limit(100))
        .await
        .unwrap();
    assert_eq!(all.total, 21);

    let deleted = client
        .delete_matching("products", Filter::lt("price", 5), true)
        .await
        .unwrap();
    assert_eq!(deleted.applied, 5);
    let deleted = client
        .delete_documents("products", [json!("p00020"), json!("p00021")], true)
        .await
        .unwrap();
    assert_eq!(deleted.applied, 2);
    let left = client
        .search::<Product>("products", Query::new(""))
        .await
        .unwrap();
    assert_eq!(left.total, 14);
    client.delete_index("products").await.unwrap();
    assert!(client.list_indexes().await.unwrap().is_empty());
}

backend_tests!(
    typed_documents_load_in_bulk_and_come_back_as_hits,
    writes_and_deletes_through_the_sdk,
);
