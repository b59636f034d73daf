//! Many small indexes: they open on first use, close when idle or past the open limit, and
//! share one writer-memory budget; deleted indexes' files are swept at start.

use std::time::{Duration, Instant};

use crate::common::*;

/// Polls `check` for up to ten seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn many_indexes_share_the_writer_budget_and_close_when_idle(mut backend: TestBackend) {
    let config = &mut backend.config;
    config.search_max_open_indexes = 3;
    config.search_writer_memory_bytes = plinth_shared::config::SEARCH_WRITER_SHARE;
    config.search_writer_idle = Duration::from_millis(200);
    config.search_idle_timeout = Duration::from_secs(2);
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let names: Vec<String> = (0..6).map(|n| format!("index{n}")).collect();
    for name in &names {
        let mut index = products();
        index["name"] = json!(name);
        server.ok(&key, Method::POST, "/indexes", Some(index)).await;
    }
    assert_eq!(server.search.free_writer_shares(), 1);

    // Six indexes written at once with room for one writer: each waits its turn.
    let writes = names.iter().map(|name| {
        let (server, key) = (&server, &key);
        async move {
            let path = format!("/indexes/{name}/documents?wait=true");
            let body = json!([{"id": name, "title": format!("lamp for {name}")}]);
            server.call(key, Method::POST, &path, Some(body)).await
        }
    });
    for (status, body) in futures::future::join_all(writes).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Every index answers, reopened as needed, and no more than three stay open.
    for name in &names {
        let (ids, _) = server.ids(&key, name, json!({"q": "lamp"})).await;
        assert_eq!(ids, [json!(name)]);
        assert!(server.search.open_indexes() <= 3);
    }
    eventually("the idle writer gives its share back", || {
        server.search.free_writer_shares() == 1
    })
    .await;
    eventually("unused indexes close", || server.search.open_indexes() == 0).await;
    let (ids, _) = server.ids(&key, "index0", json!({"q": "lamp"})).await;
    assert_eq!(ids, [json!("index0")], "a closed index opens again");
}

async fn files_of_deleted_indexes_are_swept_at_start(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, json!([{"id": "a", "title": "lamp"}])).await;
    // What a crash between deleting an index's row and its files leaves.
    let search_dir = server.backend.config.search_dir();
    let stray = search_dir.join("idx_deleted_before_its_files");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("meta.json"), b"{}").unwrap();
    let server = server.restart().await;
    assert!(!stray.exists(), "the stray directory is swept");
    let (ids, _) = server.ids(&key, "products", json!({"q": "lamp"})).await;
    assert_eq!(ids, [json!("a")], "the live index is untouched");
}

plinth_shared::backend_tests!(
    many_indexes_share_the_writer_budget_and_close_when_idle,
    files_of_deleted_indexes_are_swept_at_start,
);
