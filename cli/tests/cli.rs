//! The `plinth` binary as an operator uses it: first start, admin commands, restart, SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

struct Serve {
    child: Child,
    url: String,
    stdout: Vec<String>,
}

impl Drop for Serve {
    /// A test that fails midway does not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `plinth serve` on a free port in `data_dir` and reads its stdout up to the line
/// that gives the URL.
fn serve(data_dir: &Path) -> Serve {
    let mut child = Command::new(PLINTH)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PLINTH_DATA_DIR", data_dir)
        .env("PLINTH_LOG_LEVEL", "warn")
        // Push subscriptions may aim at this host (the operator's choice).
        .env("PLINTH_MESSAGING_PUSH_ALLOW", r#"["127.0.0.1"]"#)
        .env_remove("PLINTH_ADMIN_TOKEN")
        .env_remove("PLINTH_DATABASE_URL")
        .current_dir(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plinth serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let url = loop {
        let line = lines
            .next()
            .expect("plinth serve exited before listening")
            .unwrap();
        stdout.push(line.clone());
        if let Some(url) = line.strip_prefix("plinth listening on ") {
            break url.to_owned();
        }
    };
    Serve { child, url, stdout }
}

fn admin(serve: &Serve, token: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(PLINTH)
        .arg("--json")
        .args(args)
        .env("PLINTH_URL", &serve.url)
        .env("PLINTH_TOKEN", token)
        .output()
        .expect("run an admin command");
    assert!(
        output.status.success(),
        "plinth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null)
}

fn terminate(mut serve: Serve) {
    let pid = serve.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "plinth serve exited with {status} on SIGTERM"
            );
            return;
        }
        assert!(Instant::now() < deadline, "plinth serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn first_start_generates_an_admin_token_and_admin_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path());
    assert!(
        first
            .stdout
            .iter()
            .any(|line| line.starts_with("generated admin token")),
        "{:?}",
        first.stdout
    );
    let token_file = dir.path().join("admin_token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the admin token must be readable by its owner only"
        );
    }

    let project = admin(&first, &token, &["project", "create", "demo"]);
    let project_id = project["id"].as_str().unwrap().to_owned();
    let key = admin(
        &first,
        &token,
        &[
            "key",
            "create",
            "--project",
            &project_id,
            "--name",
            "fn",
            "--scope",
            "admin",
        ],
    );
    let secret = key["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("plinth_sk_"));
    let minted = admin(&first, &secret, &["token", "--ttl", "60"]);
    assert_eq!(minted["project_id"], project_id.as_str());
    admin(&first, &token, &["quota", "set", &project_id, "objects=7"]);
    let quotas = admin(&first, &token, &["quota", "get", &project_id]);
    assert_eq!(quotas["limits"]["objects"], 7);
    terminate(first);

    // A restart keeps the token (and prints it no more) and the data.
    let second = serve(dir.path());
    assert!(
        !second.stdout.iter().any(|line| line.contains(&token)),
        "{:?}",
        second.stdout
    );
    let listed = admin(&second, &token, &["project", "list"]);
    assert_eq!(listed["items"][0]["name"], "demo");
    let keys = admin(&second, &token, &["key", "list", "--project", &project_id]);
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);
    assert!(!keys.to_string().contains(&secret));
    terminate(second);
}

#[test]
fn invalid_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(PLINTH)
        .arg("serve")
        .env("PLINTH_DATA_DIR", dir.path())
        .env("PLINTH_REQUEST_TIMEOUT", "soon")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("request_timeout"), "{stderr}");
}

/// Runs `plinth` with `--json` and returns its stdout.
fn plinth(serve: &Serve, token: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(PLINTH)
        .arg("--json")
        .args(args)
        .env("PLINTH_URL", &serve.url)
        .env("PLINTH_TOKEN", token)
        .output()
        .expect("run plinth");
    assert!(
        output.status.success(),
        "plinth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn cp_and_ls_move_objects_between_files_and_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let admin_token = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let project = admin(&server, admin_token.trim(), &["project", "create", "files"]);
    let project_id = project["id"].as_str().unwrap();
    let scopes = ["--scope", "storage:read", "--scope", "storage:write"];
    let mut create_key = vec!["key", "create", "--project", project_id, "--name", "cli"];
    create_key.extend(scopes);
    let key = admin(&server, admin_token.trim(), &create_key);
    let secret = key["secret"].as_str().unwrap();
    let client = plinth_sdk::Client::builder()
        .base_url(&server.url)
        .token(secret)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = plinth_sdk::types::storage::CreateBucket {
        name: "docs".to_owned(),
        ..Default::default()
    };
    runtime.block_on(client.create_bucket(&bucket)).unwrap();

    // Larger than the progress threshold, so the bar's code path runs (hidden: no terminal).
    let bytes: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let local = dir.path().join("report.bin");
    std::fs::write(&local, &bytes).unwrap();
    let local = local.to_str().unwrap();
    let uploaded = plinth(&server, secret, &["cp", local, "docs/2025/"]);
    let uploaded: serde_json::Value = serde_json::from_slice(&uploaded).unwrap();
    assert_eq!(uploaded["key"], "2025/report.bin");
    assert_eq!(uploaded["size"], bytes.len());
    plinth(
        &server,
        secret,
        &["cp", "docs/2025/report.bin", "docs/copy.bin"],
    );

    let top: serde_json::Value =
        serde_json::from_slice(&plinth(&server, secret, &["ls", "docs"])).unwrap();
    assert_eq!(top["common_prefixes"], serde_json::json!(["2025/"]));
    assert_eq!(top["objects"][0]["key"], "copy.bin");
    let all = plinth(&server, secret, &["ls", "--recursive", "docs"]);
    let all: serde_json::Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(all["objects"].as_array().unwrap().len(), 2);
    let buckets: serde_json::Value =
        serde_json::from_slice(&plinth(&server, secret, &["ls"])).unwrap();
    assert_eq!(buckets[0]["name"], "docs");

    let back = dir.path().join("back.bin");
    plinth(
        &server,
        secret,
        &["cp", "docs/2025/report.bin", back.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    let piped = plinth(&server, secret, &["cp", "docs/copy.bin", "-"]);
    assert_eq!(piped, bytes);

    // Over 64 MiB, a file goes up in 8 MiB parts: nine here, so a multipart ETag.
    let large = dir.path().join("large.bin");
    let file = std::fs::File::create(&large).unwrap();
    file.set_len((64 << 20) + 1).unwrap();
    drop(file);
    let large = large.to_str().unwrap();
    let parts = plinth(&server, secret, &["cp", large, "docs/large.bin"]);
    let parts: serde_json::Value = serde_json::from_slice(&parts).unwrap();
    assert_eq!(parts["size"], (64 << 20) + 1);
    assert!(parts["etag"].as_str().unwrap().ends_with("-9\""), "{parts}");
    // Resuming an upload that is not there fails and says which.
    let resumed = Command::new(PLINTH)
        .args(["cp", "--resume", "upl_missing", large, "docs/large.bin"])
        .env("PLINTH_URL", &server.url)
        .env("PLINTH_TOKEN", secret)
        .output()
        .unwrap();
    assert!(!resumed.status.success());
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("--resume upl_missing"), "{stderr}");
    assert!(stderr.contains("upload_not_found"), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    terminate(server);
}

/// Runs `plinth` with `stdin` fed to it; returns its stdout.
fn plinth_with_stdin(serve: &Serve, token: &str, args: &[&str], stdin: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(PLINTH)
        .arg("--json")
        .args(args)
        .env("PLINTH_URL", &serve.url)
        .env("PLINTH_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run plinth");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "plinth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn topics_publish_and_consume_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let admin_token = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let project = admin(
        &server,
        admin_token.trim(),
        &["project", "create", "events"],
    );
    let project_id = project["id"].as_str().unwrap();
    let key = admin(
        &server,
        admin_token.trim(),
        &[
            "key",
            "create",
            "--project",
            project_id,
            "--name",
            "cli",
            "--scope",
            "messaging:publish",
            "--scope",
            "messaging:consume",
        ],
    );
    let key = key["secret"].as_str().unwrap();

    plinth(
        &server,
        key,
        &["topic", "create", "orders", "--partitions", "2"],
    );
    let topics: serde_json::Value =
        serde_json::from_slice(&plinth(&server, key, &["topic", "list"])).unwrap();
    assert_eq!(topics[0]["name"], "orders");
    assert_eq!(topics[0]["partition_count"], 2);

    // A subscription with a 1 s lease.
    plinth(
        &server,
        key,
        &[
            "subscription",
            "create",
            "audit",
            "--topic",
            "orders",
            "--earliest",
            "--ack-deadline",
            "1",
        ],
    );
    let subscriptions: serde_json::Value =
        serde_json::from_slice(&plinth(&server, key, &["subscription", "list"])).unwrap();
    assert_eq!(subscriptions[0]["name"], "audit");
    assert_eq!(subscriptions[0]["ack_deadline_seconds"], 1);

    let one: serde_json::Value = serde_json::from_slice(&plinth(
        &server,
        key,
        &["publish", "orders", r#"{"id": 1}"#, "--key", "c-1"],
    ))
    .unwrap();
    assert!(one["offset"].is_u64());
    let many: serde_json::Value = serde_json::from_slice(&plinth_with_stdin(
        &server,
        key,
        &["publish", "orders", "--key", "c-1"],
        "{\"id\": 2}\n\nplain words\n{\"id\": 3}\n",
    ))
    .unwrap();
    assert_eq!(many.as_array().unwrap().len(), 3);

    let consume = |extra: &[&str]| -> Vec<serde_json::Value> {
        // No waiting: a wait longer than the 1 s lease would see the same messages again.
        let mut args = vec!["consume", "audit", "--max", "10", "--wait", "0"];
        args.extend(extra);
        String::from_utf8(plinth(&server, key, &args))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["value"].clone())
            .collect()
    };
    let all = [
        serde_json::json!({"id": 1}),
        serde_json::json!({"id": 2}),
        serde_json::json!("plain words"),
        serde_json::json!({"id": 3}),
    ];
    // --no-ack prints them and leaves them to come back after their lease; a plain consume
    // prints and acknowledges them, so the next one finds nothing.
    assert_eq!(consume(&["--no-ack"]), all);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(consume(&[]), all);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(consume(&[]).is_empty());
    // A push subscription prints its signing secret once; an endpoint on the operator's
    // network is refused.
    plinth(&server, key, &["topic", "create", "hooks"]);
    let pushed: serde_json::Value = serde_json::from_slice(&plinth(
        &server,
        key,
        &[
            "subscription",
            "create",
            "hook",
            "--topic",
            "hooks",
            "--push",
            "http://127.0.0.1:9/hook",
            "--push-concurrency",
            "2",
        ],
    ))
    .unwrap();
    assert_eq!(pushed["push"]["max_concurrency"], 2);
    assert!(
        pushed["push"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let refused = Command::new(PLINTH)
        .args(["subscription", "create", "inward", "--topic", "hooks"])
        .args(["--push", "http://10.0.0.1/hook"])
        .env("PLINTH_URL", &server.url)
        .env("PLINTH_TOKEN", key)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("push_endpoint_forbidden"), "{stderr}");
    plinth(&server, key, &["subscription", "delete", "hook"]);
    plinth(&server, key, &["topic", "delete", "hooks"]);

    plinth(&server, key, &["subscription", "delete", "audit"]);
    plinth(&server, key, &["topic", "delete", "orders"]);
    let topics: serde_json::Value =
        serde_json::from_slice(&plinth(&server, key, &["topic", "list"])).unwrap();
    assert_eq!(topics, serde_json::json!([]));
    terminate(server);
}

#[test]
fn indexes_imports_and_searches_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let admin_token = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let project = admin(&server, admin_token.trim(), &["project", "create", "shop"]);
    let project_id = project["id"].as_str().unwrap();
    let key = admin(
        &server,
        admin_token.trim(),
        &[
            "key",
            "create",
            "--project",
            project_id,
            "--name",
            "cli",
            "--scope",
            "search:read",
            "--scope",
            "search:write",
        ],
    );
    let key = key["secret"].as_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&plinth(&server, key, args)).unwrap()
    };

    let created = json(&[
        "index",
        "create",
        "products",
        "--field",
        "id:keyword",
        "--field",
        "title:text:english",
        "--field",
        "price:float:sortable",
        "--field",
        "tenant:keyword:facet",
    ]);
    assert_eq!(created["schema"]["primary_key"], "id");
    assert_eq!(json(&["index", "list"]).as_array().unwrap().len(), 1);

    // A JSON array, one document of which does not fit, and NDJSON.
    let array: Vec<serde_json::Value> = (0..300)
        .map(|n| {
            if n == 123 {
                serde_json::json!({"id": "bad", "price": "cheap"})
            } else {
                let tenant = if n % 3 == 0 { "42" } else { "7" };
                serde_json::json!({"id": format!("a{n}"), "title": format!("running shoe {n}"), "price": n, "tenant": tenant})
            }
        })
        .collect();
    let array_file = dir.path().join("docs.json");
    std::fs::write(&array_file, serde_json::to_vec(&array).unwrap()).unwrap();
    let summary = json(&[
        "import",
        "products",
        array_file.to_str().unwrap(),
        "--batch",
        "100",
    ]);
    assert_eq!(summary["applied"], 299);
    assert_eq!(summary["rejected_total"], 1);
    assert_eq!(summary["rejected"][0]["position"], 123);
    assert_eq!(summary["rejected"][0]["field"], "price");
    let lines: Vec<String> = (0..50)
        .map(|n| serde_json::json!({"id": format!("n{n}"), "title": "trail lamp", "price": 1000 + n, "tenant": "42"}).to_string())
        .collect();
    let ndjson_file = dir.path().join("docs.ndjson");
    std::fs::write(&ndjson_file, lines.join("\n")).unwrap();
    let summary = json(&["import", "products", ndjson_file.to_str().unwrap()]);
    assert_eq!(
        (
            summary["applied"].as_u64(),
            summary["rejected_total"].as_u64()
        ),
        (Some(50), Some(0))
    );

    // Stemming finds "running"; a filter, a sort and a facet.
    let found = json(&[
        "search",
        "products",
        "run",
        "--filter",
        r#"{"field": "price", "lt": 30}"#,
        "--sort",
        "price:desc",
        "--facet",
        "tenant",
        "--limit",
        "3",
    ]);
    assert_eq!(found["total"], 30);
    let ids: Vec<&str> = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a29", "a28", "a27"]);
    assert_eq!(
        found["facets"]["tenant"][0],
        serde_json::json!({"value": "7", "count": 20})
    );
    // A tenant token, minted on the command line, sees only its documents.
    let token = plinth(
        &server,
        key,
        &[
            "token",
            "--scope",
            "search:read",
            "--search-filter",
            r#"products={"field": "tenant", "eq": "42"}"#,
        ],
    );
    let token: serde_json::Value = serde_json::from_slice(&token).unwrap();
    let token = token["token"].as_str().unwrap();
    let found: serde_json::Value =
        serde_json::from_slice(&plinth(&server, token, &["search", "products", "lamp"])).unwrap();
    assert_eq!(found["total"], 50);
    let found: serde_json::Value =
        serde_json::from_slice(&plinth(&server, token, &["search", "products", "shoe"])).unwrap();
    assert_eq!(
        found["total"], 99,
        "a0, a3, ... a297 but a123, whose place the bad one took"
    );

    plinth(&server, key, &["index", "delete", "products"]);
    assert_eq!(json(&["index", "list"]), serde_json::json!([]));
    terminate(server);
}
