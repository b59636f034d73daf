//! Blob files a crash left behind are collected when the service starts (file store only).

use super::common::*;

async fn orphaned_blob_files_are_collected_at_start(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    assert_eq!(
        server
            .put(&key, "files", "kept", b"kept".to_vec())
            .await
            .status(),
        200
    );
    // What a crash can leave: a half-written temporary file, and a synced blob whose row
    // never committed.
    std::fs::write(server.blob_dir.join("tmp").join("blob_dead.part"), b"half").unwrap();
    std::fs::create_dir_all(server.blob_dir.join("ff")).unwrap();
    std::fs::write(
        server
            .blob_dir
            .join("ff")
            .join("blob_00000000000000000000000000ff"),
        b"x",
    )
    .unwrap();
    assert_eq!(server.blob_files().await, 3);

    plinth_storage::Storage::open(server.shared.clone())
        .await
        .unwrap();
    assert_eq!(server.blob_files().await, 1);
    assert_eq!(
        server
            .get(&key, "files", "kept")
            .await
            .text()
            .await
            .unwrap(),
        "kept"
    );
}

plinth_shared::backend_tests!(orphaned_blob_files_are_collected_at_start,);
