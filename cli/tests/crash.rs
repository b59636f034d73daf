//! Durability: SIGKILL the real server under load, restart it, and check what survived.
//!
//! - Storage: every acknowledged object reads back whole, nothing partial is visible, the
//!   quota gauges equal what is stored, and no orphaned blob file is left.
//! - Messaging: every acknowledged message is stored exactly once, where its answer said,
//!   and each key's messages are in the order they were published.
//! - Search: every acknowledged document is searchable, and the documents gauge equals
//!   what the index holds.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// Uploads acknowledged before the kill, at least; the load stops by itself after this many
/// or after a few seconds, whichever comes first.
const WANTED_ACKS: usize = 60;

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    /// A test that fails midway does not leave its server running (it would hold the test
    /// run's output open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> Serve {
    let mut child = Command::new(PLINTH)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PLINTH_DATA_DIR", data_dir)
        .env("PLINTH_LOG_LEVEL", "warn")
        .env_remove("PLINTH_ADMIN_TOKEN")
        .env_remove("PLINTH_DATABASE_URL")
        .env_remove("PLINTH_STORAGE_URL")
        .current_dir(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plinth serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("plinth serve exited before listening")
            .unwrap();
        if let Some(url) = line.strip_prefix("plinth listening on ") {
            break url.to_owned();
        }
    };
    Serve { child, url }
}

/// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
fn sigkill(server: &mut Serve) {
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().unwrap();
}

/// Stops the server with SIGTERM and waits until it has.
fn sigterm(mut server: Serve) {
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    server.child.wait().unwrap();
}

/// The bytes of object `i`: a size and pattern of its own, so any mix-up shows.
fn content(i: usize) -> Vec<u8> {
    let len = (i * 7919) % 300_000 + 1;
    (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

async fn json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_uploads_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let admin = std::fs::read_to_string(dir.path().join("admin_token"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();

    let project = json(
        http.post(format!("{}/console/v1/projects", server.url))
            .bearer_auth(&admin)
            .json(&json!({"name": "crash"})),
    )
    .await;
    let project_id = project["id"].as_str().unwrap().to_owned();
    let key = json(
        http.post(format!(
            "{}/console/v1/projects/{project_id}/keys",
            server.url
        ))
        .bearer_auth(&admin)
        .json(&json!({"name": "load", "scopes": ["storage:read", "storage:write"]})),
    )
    .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    json(
        http.post(format!("{}/storage/v1/buckets", server.url))
            .bearer_auth(&secret)
            .json(&json!({"name": "load"})),
    )
    .await;

    // 16 writers, each its own keys, until enough are acknowledged; then SIGKILL mid-flight.
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (http, url, secret, acked) = (
                http.clone(),
                server.url.clone(),
                secret.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                for round in 0..1000 {
                    let i = round * 16 + writer;
                    let put = http
                        .put(format!("{url}/storage/v1/buckets/load/objects/obj-{i}"))
                        .bearer_auth(&secret)
                        .body(content(i))
                        .send()
                        .await;
                    match put {
                        Ok(response) if response.status() == 200 => acked.lock().unwrap().push(i),
                        _ => return,
                    }
                    if Instant::now() > deadline {
                        return;
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < WANTED_ACKS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&mut server);
    futures::future::join_all(writers).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 10,
        "too few uploads were acknowledged to test anything: {}",
        acked.len()
    );

    let server = serve(dir.path());
    // Every acknowledged object reads back whole.
    for &i in &acked {
        let got = http
            .get(format!(
                "{}/storage/v1/buckets/load/objects/obj-{i}",
                server.url
            ))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.status(),
            200,
            "acknowledged obj-{i} is missing after the crash"
        );
        assert!(
            got.bytes().await.unwrap().as_ref() == content(i).as_slice(),
            "obj-{i} is damaged"
        );
    }
    // Whatever else is visible is whole too (an upload may commit just before its answer was
    // lost), and the gauges equal exactly what is stored.
    let listing = json(
        http.get(format!(
            "{}/storage/v1/buckets/load/objects?limit=1000",
            server.url
        ))
        .bearer_auth(&secret),
    )
    .await;
    let objects = listing["objects"].as_array().unwrap();
    let mut stored_bytes = 0;
    for object in objects {
        let key = object["key"].as_str().unwrap();
        let i: usize = key.trim_start_matches("obj-").parse().unwrap();
        assert_eq!(
            object["size"].as_u64().unwrap(),
            content(i).len() as u64,
            "{key} is partial"
        );
        stored_bytes += content(i).len() as u64;
    }
    eprintln!(
        "crash test: {} acknowledged, {} visible after restart",
        acked.len(),
        objects.len()
    );
    assert!(objects.len() >= acked.len());
    let quotas = json(
        http.get(format!(
            "{}/console/v1/projects/{project_id}/quotas",
            server.url
        ))
        .bearer_auth(&admin),
    )
    .await;
    assert_eq!(
        quotas["usage"]["objects"].as_u64().unwrap(),
        objects.len() as u64
    );
    assert_eq!(
        quotas["usage"]["stored_bytes"].as_u64().unwrap(),
        stored_bytes
    );

    // The restart removed what the crash left: one blob file per object, no temporary file.
    let blobs = dir.path().join("blobs");
    let temporary = std::fs::read_dir(blobs.join("tmp")).unwrap().count();
    assert_eq!(temporary, 0);
    let files: usize = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name() != "tmp")
        .map(|entry| std::fs::read_dir(entry.path()).unwrap().count())
        .sum();
    assert_eq!(files, objects.len());

    sigterm(server);
}

/// A project and a key with `scopes`, through the admin token in the data directory.
async fn project_key(http: &reqwest::Client, server: &Serve, dir: &Path, scopes: Value) -> String {
    let admin = std::fs::read_to_string(dir.join("admin_token"))
        .unwrap()
        .trim()
        .to_owned();
    let project = json(
        http.post(format!("{}/console/v1/projects", server.url))
            .bearer_auth(&admin)
            .json(&json!({"name": "crash-messages"})),
    )
    .await;
    let id = project["id"].as_str().unwrap();
    let key = json(
        http.post(format!("{}/console/v1/projects/{id}/keys", server.url))
            .bearer_auth(&admin)
            .json(&json!({"name": "load", "scopes": scopes})),
    )
    .await;
    key["secret"].as_str().unwrap().to_owned()
}

/// Messages acknowledged before the kill, at least (the load stops by itself after a few
/// seconds too).
const WANTED_MESSAGES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let http = reqwest::Client::new();
    let secret = project_key(
        &http,
        &server,
        dir.path(),
        json!(["messaging:publish", "messaging:consume"]),
    )
    .await;
    json(
        http.post(format!("{}/messaging/v1/topics", server.url))
            .bearer_auth(&secret)
            .json(&json!({"name": "load", "partitions": 4})),
    )
    .await;

    // 16 publishers, each with its own key (so its messages share a partition and an order),
    // sending batches of 1 to 3 numbered messages until the kill.
    let acked = Arc::new(Mutex::new(Vec::<(usize, usize, u64, u64)>::new()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let publishers: Vec<_> = (0..16)
        .map(|writer| {
            let (http, url, secret, acked) = (
                http.clone(),
                server.url.clone(),
                secret.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                let mut seq = 0;
                while Instant::now() < deadline {
                    let count = 1 + (seq + writer) % 3;
                    let messages: Vec<Value> = (seq..seq + count)
                        .map(|n| json!({"key": format!("w{writer}"), "value": {"w": writer, "n": n}}))
                        .collect();
                    let sent = http
                        .post(format!("{url}/messaging/v1/topics/load/messages"))
                        .bearer_auth(&secret)
                        .json(&json!({ "messages": messages }))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    if response.status() != 200 {
                        return;
                    }
                    let Ok(body) = response.json::<Value>().await else { return };
                    let mut acked = acked.lock().unwrap();
                    for (i, at) in body["messages"].as_array().unwrap().iter().enumerate() {
                        let (partition, offset) = (at["partition"].as_u64().unwrap(), at["offset"].as_u64().unwrap());
                        acked.push((writer, seq + i, partition, offset));
                    }
                    seq += count;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < WANTED_MESSAGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&mut server);
    futures::future::join_all(publishers).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "too few messages were acknowledged to test anything: {}",
        acked.len()
    );

    // After a restart, read every partition from its start.
    let server = serve(dir.path());
    let mut stored = std::collections::HashMap::new();
    for partition in 0..4u64 {
        let mut offset = 0;
        let mut last_seq = std::collections::HashMap::new();
        loop {
            let page = json(
                http.get(format!(
                    "{}/messaging/v1/topics/load/partitions/{partition}/messages?offset={offset}&limit=1000",
                    server.url
                ))
                .bearer_auth(&secret),
            )
            .await;
            let messages = page["messages"].as_array().unwrap();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let (w, n) = (
                    message["value"]["w"].as_u64().unwrap(),
                    message["value"]["n"].as_u64().unwrap(),
                );
                // Stored once, and in the order each publisher sent.
                let at = (partition, message["offset"].as_u64().unwrap());
                assert!(
                    stored.insert((w, n), at).is_none(),
                    "w{w} n{n} is stored twice"
                );
                if let Some(previous) = last_seq.insert(w, n) {
                    assert!(n > previous, "w{w}: n{n} after n{previous}");
                }
            }
            offset = page["next_offset"].as_u64().unwrap();
        }
    }
    for &(w, n, partition, offset) in &acked {
        assert_eq!(
            stored.get(&(w as u64, n as u64)),
            Some(&(partition, offset)),
            "acknowledged w{w} n{n} is not where its answer said"
        );
    }
    eprintln!(
        "crash test: {} messages acknowledged, {} stored after restart",
        acked.len(),
        stored.len()
    );

    sigterm(server);
}

/// Documents acknowledged before the kill, at least (the load stops by itself after a few
/// seconds too).
const WANTED_DOCUMENTS: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_documents_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path());
    let http = reqwest::Client::new();
    let secret = project_key(
        &http,
        &server,
        dir.path(),
        json!(["search:read", "search:write"]),
    )
    .await;
    let schema = json!({
        "name": "load",
        "schema": {"primary_key": "id", "fields": [
            {"name": "id", "type": "keyword"},
            {"name": "writer", "type": "keyword"},
            {"name": "body", "type": "text"}
        ]}
    });
    json(
        http.post(format!("{}/search/v1/indexes", server.url))
            .bearer_auth(&secret)
            .json(&schema),
    )
    .await;

    // 8 writers, sending batches of 1 to 50 documents until the kill, half of them as
    // JSON upserts and half as NDJSON imports.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (http, url, secret, acked) = (
                http.clone(),
                server.url.clone(),
                secret.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                let mut seq = 0;
                while Instant::now() < deadline {
                    let count = 1 + (seq * 7 + writer) % 50;
                    let ids: Vec<String> = (seq..seq + count).map(|n| format!("w{writer}-{n}")).collect();
                    let docs: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"id": id, "writer": format!("w{writer}"), "body": format!("document {id}")}))
                        .collect();
                    let request = if seq % 2 == 0 {
                        http.post(format!("{url}/search/v1/indexes/load/documents")).json(&docs)
                    } else {
                        let lines: Vec<String> = docs.iter().map(Value::to_string).collect();
                        http.post(format!("{url}/search/v1/indexes/load/documents/import"))
                            .header("content-type", "application/x-ndjson")
                            .body(lines.join("\n"))
                    };
                    let Ok(response) = request.bearer_auth(&secret).send().await else { return };
                    if response.status() != 200 {
                        return;
                    }
                    acked.lock().unwrap().extend(ids);
                    seq += count;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < WANTED_DOCUMENTS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(&mut server);
    futures::future::join_all(writers).await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "too few documents were acknowledged to test anything: {}",
        acked.len()
    );

    // After a restart every acknowledged document is found, and the gauge is the truth.
    let server = serve(dir.path());
    for id in &acked {
        let response = http
            .get(format!(
                "{}/search/v1/indexes/load/documents/{id}",
                server.url
            ))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged {id} is lost");
    }
    let found = json(
        http.post(format!("{}/search/v1/indexes/load/search", server.url))
            .bearer_auth(&secret)
            .json(&json!({"q": "", "limit": 1})),
    )
    .await;
    let held = found["total"].as_u64().unwrap();
    assert!(held >= acked.len() as u64);
    let admin = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let projects = json(
        http.get(format!("{}/console/v1/projects", server.url))
            .bearer_auth(admin.trim()),
    )
    .await;
    let project = projects["items"][0]["id"].as_str().unwrap();
    let quotas = json(
        http.get(format!(
            "{}/console/v1/projects/{project}/quotas",
            server.url
        ))
        .bearer_auth(admin.trim()),
    )
    .await;
    assert_eq!(
        quotas["usage"]["documents"].as_u64(),
        Some(held),
        "the documents gauge after the restart"
    );
    eprintln!(
        "crash test: {} documents acknowledged, {held} held after restart",
        acked.len()
    );

    sigterm(server);
}
