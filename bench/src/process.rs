//! What the benchmarks share: server processes stopped on drop, free loopback ports, and
//! a `plinth serve` on a fresh data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A running server process, stopped when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Drop for Process {
    /// Asks the server to stop with SIGTERM, and kills it if it has not within five seconds.
    /// nginx's master stops its workers on SIGTERM; a SIGKILL left them running, holding the
    /// benchmark's output open.
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// The process id, for reading its resource use.
    pub(crate) fn id(&self) -> u32 {
        self.0.id()
    }
}

/// Returns a loopback port that is free, and whose + 10000 twin is free too (SeaweedFS
/// takes that one for gRPC). Calls walk upwards from a point set by the process id, so
/// concurrent runs and consecutive calls do not collide.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = 20000 + std::process::id() % 9000;
    for _ in 0..1000 {
        let port = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10000 + 20000;
        let port = u16::try_from(port)?;
        let both = [port, port + 10000]
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if both {
            return Ok(port);
        }
    }
    bail!("no free port pair")
}

/// Waits until an HTTP server answers at `url`.
pub(crate) async fn wait_until_up(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not come up")
}

/// Waits until something accepts connections on a loopback port.
pub(crate) async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on port {port}")
}

/// Starts `plinth serve` on a fresh data dir with an admin token and the extra
/// environment; returns it with its URL and the token.
pub(crate) async fn start_plinth(
    plinth: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<(Process, String, String)> {
    let port = free_port()?;
    let admin = format!("bench-admin-{}", std::process::id()).repeat(2);
    let mut child = Command::new(plinth)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PLINTH_DATA_DIR", dir)
        .env("PLINTH_ADMIN_TOKEN", &admin)
        .env("PLINTH_LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", plinth.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().context("plinth exited")??;
        if let Some(url) = line.strip_prefix("plinth listening on ") {
            break url.to_owned();
        }
    };
    // Keep reading what the server prints, so that a full pipe never stalls it.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((process, url, admin))
}

/// Creates a project `bench` on a Plinth server with the admin token, and a key of it with
/// these scopes; returns the key's secret.
pub(crate) async fn project_key(url: &str, admin: &str, scopes: &[&str]) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let project: Value = http
        .post(format!("{url}/console/v1/projects"))
        .bearer_auth(admin)
        .json(&json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let id = project["id"].as_str().context("project id")?;
    let key: Value = http
        .post(format!("{url}/console/v1/projects/{id}/keys"))
        .bearer_auth(admin)
        .json(&json!({"name": "bench", "scopes": scopes}))
        .send()
        .await?
        .json()
        .await?;
    Ok(key["secret"].as_str().context("secret")?.to_owned())
}
