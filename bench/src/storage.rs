//! `storage`: PUT and GET throughput and latency for small, medium and large objects at
//! several concurrencies, against Plinth (file backend, a real `plinth serve`), nginx serving
//! the same files (the ceiling for GET) and SeaweedFS's S3 server (the peer), in one run; and
//! Plinth's peak memory while it streams a 2 GiB object up and down.
//!
//! All three are separate processes on loopback, driven by the same client (reqwest), so the
//! client's cost is the same for each. SeaweedFS runs without credentials (its anonymous
//! mode), so it does no signature check, where Plinth authenticates every request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::process::{Process, free_port, wait_until_up};
use serde_json::{Value, json};

/// Object sizes measured, with their labels.
const SIZES: &[(&str, usize)] = &[("4 KiB", 4 << 10), ("1 MiB", 1 << 20), ("64 MiB", 64 << 20)];

/// Concurrencies measured.
const CONCURRENCY: &[usize] = &[1, 16, 64];

/// How to start the servers.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) plinth: PathBuf,
    pub(crate) weed: PathBuf,
    pub(crate) nginx: PathBuf,
    /// Only the cells whose "OP SIZE" contains this, and no memory run.
    pub(crate) only: Option<String>,
    /// Rounds per cell and system; the median is reported.
    pub(crate) rounds: usize,
}

/// One system under test: where objects go, and how to authenticate.
struct Target {
    name: &'static str,
    base: String,
    token: Option<String>,
    can_put: bool,
    /// Whether GETs are measured (not for a second bucket of the same server).
    can_get: bool,
}

impl Target {
    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    fn request(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        key: &str,
    ) -> reqwest::RequestBuilder {
        let request = http.request(method, self.url(key));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// The result of one cell: throughput and latency percentiles.
#[derive(Clone)]
struct Cell {
    ops_per_sec: f64,
    mb_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

async fn run_cell(
    http: &reqwest::Client,
    target: &Arc<Target>,
    (put, size, concurrency): (bool, usize, usize),
    ops: usize,
    round: usize,
) -> anyhow::Result<Cell> {
    let body = bytes::Bytes::from(vec![0x5au8; size]);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, target, next, body) =
                (http.clone(), target.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ops {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let t = Instant::now();
                    let response = if put {
                        let key = format!("put-{size}-{round}-{i}");
                        target
                            .request(&http, reqwest::Method::PUT, &key)
                            .body(body.clone())
                            .send()
                            .await?
                    } else {
                        let key = format!("get-{size}-{}", i % 16);
                        target
                            .request(&http, reqwest::Method::GET, &key)
                            .send()
                            .await?
                    };
                    ensure!(
                        response.status().is_success(),
                        "{} answered {}",
                        target.name,
                        response.status()
                    );
                    let got = response.bytes().await?;
                    ensure!(
                        put || got.len() == size,
                        "{} sent {} bytes",
                        target.name,
                        got.len()
                    );
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(ops);
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Cell {
        ops_per_sec: ops as f64 / elapsed,
        mb_per_sec: (ops * size) as f64 / elapsed / 1e6,
        p50: at(0.50),
        p99: at(0.99),
    })
}

fn ops_for(size: usize, concurrency: usize) -> usize {
    match size {
        s if s <= 4 << 10 => 2000.max(concurrency * 20),
        s if s <= 1 << 20 => 300.max(concurrency * 4),
        _ => 16,
    }
}

/// Starts `plinth serve` on a fresh data dir; returns it with a key's secret.
async fn start_plinth(
    binaries: &Binaries,
    dir: &Path,
) -> anyhow::Result<(Process, String, String)> {
    let (process, url, admin) = crate::process::start_plinth(&binaries.plinth, dir, &[]).await?;
    let secret =
        crate::process::project_key(&url, &admin, &["storage:read", "storage:write"]).await?;
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(token.to_owned())
            .json(&body)
            .send()
    };
    ensure!(
        post("/storage/v1/buckets", &secret, json!({"name": "bench"}))
            .await?
            .status()
            .is_success()
    );
    Ok((process, url, secret))
}

/// Makes SeaweedFS sync every write to the `bench-fsync` bucket (its per-path `fsync`
/// setting, which covers the volume data; the filer's own metadata store is not synced).
async fn configure_fsync_bucket(
    binaries: &Binaries,
    weed_url: &str,
    master: &str,
) -> anyhow::Result<()> {
    let created = reqwest::Client::new()
        .put(format!("{weed_url}/bench-fsync"))
        .send()
        .await?;
    ensure!(
        created.status().is_success(),
        "bucket creation answered {}",
        created.status()
    );
    let mut shell = Command::new(&binaries.weed)
        .args(["shell", &format!("-master={master}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start weed shell")?;
    shell
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"fs.configure -locationPrefix=/buckets/bench-fsync/ -fsync -apply\n")?;
    let output = shell.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        text.contains("\"fsync\":  true") || text.contains("\"fsync\": true"),
        "weed shell did not set fsync: {text}"
    );
    Ok(())
}

fn start_weed(binaries: &Binaries, dir: &Path) -> anyhow::Result<(Process, String, String)> {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect::<Result<_, _>>()?;
    let child = Command::new(&binaries.weed)
        .arg(format!("-logdir={}", dir.display()))
        .args([
            "mini",
            &format!("-dir={}", dir.display()),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
        ])
        .args([
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ])
        .arg(format!("-s3.port={}", ports[0]))
        .arg(format!("-master.port={}", ports[1]))
        .arg(format!("-volume.port={}", ports[2]))
        .arg(format!("-filer.port={}", ports[3]))
        .arg(format!("-admin.port={}", ports[4]))
        .arg("-bucket=bench")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binaries.weed.display()))?;
    Ok((
        Process(child),
        format!("http://127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    ))
}

fn start_nginx(binaries: &Binaries, dir: &Path) -> anyhow::Result<(Process, String)> {
    let port = free_port()?;
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    for (_, size) in SIZES {
        for i in 0..16 {
            std::fs::write(root.join(format!("get-{size}-{i}")), vec![0x5au8; *size])?;
        }
    }
    let prefix = dir.display();
    let conf = format!(
        "worker_processes 2; pid {prefix}/nginx.pid; error_log {prefix}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; sendfile on; client_body_temp_path {prefix}/body;\n\
         proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fastcgi;\n\
         uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
        root = root.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::File::create(&path)?.write_all(conf.as_bytes())?;
    let child = Command::new(&binaries.nginx)
        .args([
            "-p",
            &prefix.to_string(),
            "-c",
            &path.display().to_string(),
            "-g",
            "daemon off;",
        ])
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", binaries.nginx.display()))?;
    Ok((Process(child), format!("http://127.0.0.1:{port}/")))
}

fn peak_rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("value")?
        .parse::<u64>()?
        * 1024)
}

/// Streams a 2 GiB object up and down through Plinth and returns its peak memory.
async fn two_gib_rss(plinth: &Process, target: &Target) -> anyhow::Result<u64> {
    const SIZE: usize = 2 << 30;
    let chunk = bytes::Bytes::from(vec![0x33u8; 1 << 20]);
    let chunks =
        futures::stream::iter((0..SIZE >> 20).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let http = reqwest::Client::new();
    let put = target
        .request(&http, reqwest::Method::PUT, "two-gib")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    ensure!(
        put.status().is_success(),
        "2 GiB PUT answered {}",
        put.status()
    );
    let mut got = target
        .request(&http, reqwest::Method::GET, "two-gib")
        .send()
        .await?;
    let mut len = 0;
    while let Some(piece) = got.chunk().await? {
        len += piece.len();
    }
    ensure!(len == SIZE, "2 GiB GET gave {len} bytes");
    peak_rss_of(plinth.id())
}

/// Runs the storage benchmark and prints its tables.
pub(crate) async fn run(binaries: &Binaries) -> anyhow::Result<()> {
    let begun = Instant::now();
    let dir = tempfile::tempdir()?;
    let (plinth, plinth_url, secret) = start_plinth(binaries, &dir.path().join("plinth")).await?;
    let (weed, weed_url, weed_master) = start_weed(binaries, &{
        let d = dir.path().join("weed");
        std::fs::create_dir_all(&d)?;
        d
    })?;
    let (nginx, nginx_url) = start_nginx(binaries, dir.path())?;
    wait_until_up(&weed_url).await?;
    configure_fsync_bucket(binaries, &weed_url, &weed_master).await?;
    wait_until_up(&nginx_url).await?;

    let targets = [
        Arc::new(Target {
            name: "Plinth",
            base: format!("{plinth_url}/storage/v1/buckets/bench/objects/"),
            token: Some(secret),
            can_put: true,
            can_get: true,
        }),
        Arc::new(Target {
            name: "SeaweedFS S3",
            base: format!("{weed_url}/bench/"),
            token: None,
            can_put: true,
            can_get: true,
        }),
        Arc::new(Target {
            name: "SeaweedFS S3, fsync",
            base: format!("{weed_url}/bench-fsync/"),
            token: None,
            can_put: true,
            can_get: false,
        }),
        Arc::new(Target {
            name: "nginx",
            base: nginx_url.clone(),
            token: None,
            can_put: false,
            can_get: true,
        }),
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    eprintln!("servers up after {:.1?}", begun.elapsed());
    // The objects every GET reads.
    for target in targets.iter().filter(|t| t.can_put && t.can_get) {
        for (_, size) in SIZES {
            for i in 0..16 {
                let key = format!("get-{size}-{i}");
                let response = target
                    .request(&http, reqwest::Method::PUT, &key)
                    .body(vec![0x5au8; *size])
                    .send()
                    .await?;
                ensure!(
                    response.status().is_success(),
                    "{} seeding answered {}",
                    target.name,
                    response.status()
                );
            }
        }
    }

    eprintln!("objects seeded after {:.1?}", begun.elapsed());
    println!("| op | size | conc | system | ops/s | MB/s | p50 ms | p99 ms | ratio to Plinth |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for put in [true, false] {
        for (label, size) in SIZES {
            for &concurrency in CONCURRENCY {
                let op = if put { "PUT" } else { "GET" };
                if let Some(only) = &binaries.only
                    && !format!("{op} {label}").contains(only.as_str())
                {
                    continue;
                }
                let ops = ops_for(*size, concurrency);
                let measured: Vec<_> = targets
                    .iter()
                    .filter(|t| if put { t.can_put } else { t.can_get })
                    .collect();
                // Rounds alternate between the systems, so that drift in the machine's speed
                // falls on all of them; each system's median round is reported.
                let mut rounds = vec![Vec::new(); measured.len()];
                for round in 0..binaries.rounds.max(1) {
                    for (target, cells) in measured.iter().zip(&mut rounds) {
                        let shape = (put, *size, concurrency);
                        cells.push(run_cell(&http, target, shape, ops, round).await?);
                    }
                }
                let mut plinth_ops = None;
                for (target, mut cells) in measured.iter().zip(rounds) {
                    cells.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
                    let cell = cells.swap_remove(cells.len() / 2);
                    let base = *plinth_ops.get_or_insert(cell.ops_per_sec);
                    println!(
                        "| {} | {label} | {concurrency} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
                        op,
                        target.name,
                        cell.ops_per_sec,
                        cell.mb_per_sec,
                        cell.p50.as_secs_f64() * 1e3,
                        cell.p99.as_secs_f64() * 1e3,
                        cell.ops_per_sec / base,
                    );
                }
            }
        }
    }

    eprintln!("cells done after {:.1?}", begun.elapsed());
    drop((plinth, weed, nginx));
    eprintln!("servers stopped after {:.1?}", begun.elapsed());
    if binaries.only.is_some() {
        return Ok(());
    }

    // On a fresh process, so that the peak is this transfer's and not the load's above.
    let (fresh, url, secret) = start_plinth(binaries, &dir.path().join("plinth-rss")).await?;
    let target = Target {
        name: "Plinth",
        base: format!("{url}/storage/v1/buckets/bench/objects/"),
        token: Some(secret),
        can_put: true,
        can_get: true,
    };
    let rss = two_gib_rss(&fresh, &target).await?;
    println!(
        "\nPlinth peak RSS, a fresh process streaming a 2 GiB object up and down: {} MiB",
        rss >> 20
    );
    Ok(())
}
