//! `messaging`: publish throughput and publish-to-delivery latency of Plinth's embedded log
//! (a real `plinth serve`, over HTTP with an API key), NATS JetStream (file storage) and Redis
//! Streams (XADD), in one run.
//!
//! Each peer runs twice: syncing every write before it acknowledges (JetStream
//! `sync_interval: always`, Redis `appendonly yes` with `appendfsync always`) and with its
//! defaults (JetStream syncs every two minutes; Redis keeps no append-only file and snapshots
//! now and then). Plinth's embedded log always syncs before it answers (concurrent publishes
//! share a sync); it has no other setting, and runs in both tables.
//!
//! Throughput: single messages from 1, 16 and 64 concurrent clients (each waits for its
//! acknowledgement before it sends the next), and batches of 100 (a Plinth publish of 100
//! messages, a JetStream burst of 100 publishes before the 100 acks are awaited, a Redis
//! pipeline of 100 XADDs) from 1 and 16 clients. Every client has its own connection.
//! Plinth's publishers speak HTTP/1.1 through hyper's connection API rather than a pooling
//! client such as reqwest: on two cores the client shares the CPU with the server, and the
//! peers' clients (async-nats, redis) are thin layers over their sockets too.
//! Latency: one producer at 1,000 messages a second for a few seconds, one consumer (Plinth:
//! an event stream; JetStream: a pull consumer's message stream; Redis: `XREAD BLOCK`), each
//! message carrying its send time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderValue, Request};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::process::{Process, free_port, wait_for_port};

/// Where Plinth takes publishes to the benchmark's topic.
const PUBLISH_PATH: &str = "/messaging/v1/topics/bench/messages";

/// Value sizes measured, with their labels.
const SIZES: &[(&str, usize)] = &[("100 B", 100), ("1 KiB", 1024)];
/// Cells: clients and messages per operation.
const SHAPES: &[(usize, usize)] = &[(1, 1), (16, 1), (64, 1), (1, 100), (16, 100)];
/// Publishes a second in the latency run.
const LATENCY_RATE: u64 = 1000;

/// How the peers are started and how long each cell runs.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) plinth: std::path::PathBuf,
    pub(crate) nats: std::path::PathBuf,
    pub(crate) redis: std::path::PathBuf,
    /// Seconds per cell and system.
    pub(crate) seconds: f64,
    /// Seconds of the latency run per system.
    pub(crate) latency_seconds: u64,
}

/// A system under test, connected.
enum System {
    Plinth { url: String, key: String },
    Nats { url: String },
    Redis { url: String },
}

/// One client of a system.
enum Client {
    Plinth {
        /// One HTTP/1.1 connection, driven by its own task.
        http: SendRequest<Full<Bytes>>,
        /// `host:port`, for the `Host` header.
        authority: String,
        /// The `Authorization` header.
        key: HeaderValue,
        /// The last body sent, by value and count: built once, so that the client costs
        /// as little per publish as the peers' clients do.
        body: Option<(Bytes, usize, Bytes)>,
    },
    Nats(async_nats::jetstream::Context),
    Redis(redis::aio::MultiplexedConnection),
}

impl System {
    async fn client(&self) -> anyhow::Result<Client> {
        Ok(match self {
            System::Plinth { url, key } => {
                let authority = url.trim_start_matches("http://").to_owned();
                let stream = TcpStream::connect(&authority).await?;
                stream.set_nodelay(true)?;
                let (http, connection) = handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                Client::Plinth {
                    http,
                    authority,
                    key: HeaderValue::from_str(&format!("Bearer {key}"))?,
                    body: None,
                }
            }
            System::Nats { url } => {
                Client::Nats(async_nats::jetstream::new(async_nats::connect(url).await?))
            }
            System::Redis { url } => Client::Redis(
                redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection()
                    .await?,
            ),
        })
    }
}

impl Client {
    /// Publishes `count` copies of `value` (one operation) and waits until all are
    /// acknowledged.
    async fn publish(&mut self, value: &Bytes, count: usize) -> anyhow::Result<()> {
        match self {
            Client::Plinth {
                http,
                authority,
                key,
                body,
            } => {
                let same = matches!(body, Some((v, c, _)) if v == value && *c == count);
                if !same {
                    let text = std::str::from_utf8(value)?;
                    let messages: Vec<Value> =
                        (0..count).map(|_| json!({ "value": text })).collect();
                    let json = json!({ "messages": messages }).to_string();
                    *body = Some((value.clone(), count, Bytes::from(json)));
                }
                let payload = body.as_ref().map(|(_, _, b)| b.clone()).unwrap_or_default();
                let request = Request::post(PUBLISH_PATH)
                    .header(HOST, authority.as_str())
                    .header(AUTHORIZATION, key.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(payload))?;
                http.ready().await?;
                let response = http.send_request(request).await?;
                ensure!(
                    response.status().is_success(),
                    "publish: {}",
                    response.status()
                );
                response.into_body().collect().await?;
            }
            Client::Nats(js) => {
                let mut acks = Vec::with_capacity(count);
                for _ in 0..count {
                    acks.push(js.publish("bench.data", value.clone()).await?);
                }
                for ack in acks {
                    ack.await?;
                }
            }
            Client::Redis(connection) => {
                let mut pipe = redis::pipe();
                for _ in 0..count {
                    pipe.cmd("XADD")
                        .arg("bench")
                        .arg("*")
                        .arg("v")
                        .arg(value.as_ref());
                }
                let _: Vec<String> = pipe.query_async(connection).await?;
            }
        }
        Ok(())
    }
}

/// What one cell measured.
#[derive(Clone, Copy)]
struct Cell {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs `clients` clients publishing `count` messages per operation for `seconds`.
async fn run_cell(
    system: &System,
    value: &Bytes,
    (clients, count): (usize, usize),
    seconds: f64,
) -> anyhow::Result<Cell> {
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = system.client().await?;
        client.publish(value, count).await?; // warm the connection
        connected.push(client);
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers = connected.into_iter().map(|mut client| {
        let value = value.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                client.publish(&value, count).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        })
    });
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok(Cell {
        per_sec: (latencies.len() * count) as f64 / elapsed,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// Publishes at [`LATENCY_RATE`] for `seconds` while one consumer receives; returns the
/// p50 and p99 from the send to the receipt.
async fn latency(system: &System, seconds: u64) -> anyhow::Result<(Duration, Duration)> {
    let origin = Instant::now();
    let total = (LATENCY_RATE * seconds) as usize;
    let (found, received) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let consumer = consume(system, origin, total, found).await?;
    let mut producer = system.client().await?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let stamp = format!("{:020}", origin.elapsed().as_nanos());
        producer.publish(&Bytes::from(stamp), 1).await?;
    }
    let mut received = received;
    let mut samples = Vec::with_capacity(total);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while samples.len() < total {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(sample)) => samples.push(sample),
            _ => break,
        }
    }
    consumer.abort();
    ensure!(
        samples.len() == total,
        "{} of {total} messages arrived",
        samples.len()
    );
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

fn sample(origin: Instant, payload: &[u8]) -> Option<Duration> {
    let text = std::str::from_utf8(payload).ok()?.trim_matches('"');
    let sent = Duration::from_nanos(text.parse().ok()?);
    Some(origin.elapsed().saturating_sub(sent))
}

/// Starts the consumer of the latency run; it reports each message's age as it arrives.
async fn consume(
    system: &System,
    origin: Instant,
    total: usize,
    found: tokio::sync::mpsc::UnboundedSender<Duration>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    Ok(match system {
        System::Plinth { url, key } => {
            let http = reqwest::Client::new();
            let created = http
                .post(format!("{url}/messaging/v1/subscriptions"))
                .bearer_auth(key)
                .json(&json!({"name": format!("lat-{}", origin.elapsed().as_nanos()), "topic": "bench", "start": "latest", "ack_deadline_seconds": 60}))
                .send()
                .await?;
            ensure!(
                created.status().is_success(),
                "subscribe: {}",
                created.status()
            );
            let name: Value = created.json().await?;
            let name = name["name"].as_str().context("name")?.to_owned();
            let events = http
                .get(format!(
                    "{url}/messaging/v1/subscriptions/{name}/stream?max_in_flight=1000"
                ))
                .bearer_auth(key)
                .send()
                .await?;
            ensure!(events.status().is_success(), "stream: {}", events.status());
            let (url, key) = (url.clone(), key.clone());
            tokio::spawn(async move {
                let mut body = events.bytes_stream();
                let mut buffer = String::new();
                let mut leases = Vec::new();
                let mut acked_at = Instant::now();
                while let Some(chunk) = body.next().await {
                    buffer.push_str(std::str::from_utf8(&chunk?)?);
                    while let Some(end) = buffer.find("\n\n") {
                        let block: String = buffer.drain(..end + 2).collect();
                        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                        else {
                            continue;
                        };
                        let delivery: Value = serde_json::from_str(data)?;
                        let value = delivery["message"]["value"].as_str().unwrap_or_default();
                        if let Some(age) = sample(origin, value.as_bytes()) {
                            let _ = found.send(age);
                        }
                        leases.push(delivery["lease_id"].clone());
                    }
                    // Acks in the background of the measurement, a few times a second.
                    if acked_at.elapsed() > Duration::from_millis(100) && !leases.is_empty() {
                        let body = json!({ "lease_ids": std::mem::take(&mut leases) });
                        let ack = http
                            .post(format!("{url}/messaging/v1/subscriptions/{name}/ack"))
                            .bearer_auth(&key)
                            .json(&body);
                        tokio::spawn(ack.send());
                        acked_at = Instant::now();
                    }
                }
                Ok(())
            })
        }
        System::Nats { url } => {
            use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
            let js = async_nats::jetstream::new(async_nats::connect(url).await?);
            let stream = js.get_stream("bench").await?;
            let consumer = stream
                .create_consumer(pull::Config {
                    deliver_policy: DeliverPolicy::New,
                    ack_policy: AckPolicy::None,
                    ..pull::Config::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            tokio::spawn(async move {
                let mut seen = 0;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(|err| anyhow::anyhow!("{err}"))?;
                    if let Some(age) = sample(origin, &message.payload) {
                        let _ = found.send(age);
                    }
                    seen += 1;
                    if seen == total {
                        break;
                    }
                }
                Ok(())
            })
        }
        System::Redis { url } => {
            let mut connection = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new().set_response_timeout(None),
                )
                .await?;
            tokio::spawn(async move {
                let mut last = "$".to_owned();
                loop {
                    let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
                        .arg("BLOCK")
                        .arg(0)
                        .arg("STREAMS")
                        .arg("bench")
                        .arg(&last)
                        .query_async(&mut connection)
                        .await?;
                    for key in reply.keys {
                        for entry in key.ids {
                            if let Some(redis::Value::BulkString(bytes)) = entry.map.get("v")
                                && let Some(age) = sample(origin, bytes)
                            {
                                let _ = found.send(age);
                            }
                            last = entry.id;
                        }
                    }
                }
            })
        }
    })
}

/// Starts `plinth serve` on a fresh data dir with a topic `bench`; returns it with a key.
async fn start_plinth(setup: &Setup, dir: &Path) -> anyhow::Result<(Process, System)> {
    let (process, url, admin) = crate::process::start_plinth(
        &setup.plinth,
        dir,
        &[
            ("PLINTH_QUOTAS__REQUESTS_PER_SECOND", "10000000"),
            ("PLINTH_QUOTAS__REQUEST_BURST", "10000000"),
        ],
    )
    .await?;
    let key =
        crate::process::project_key(&url, &admin, &["messaging:publish", "messaging:consume"])
            .await?;
    let created = reqwest::Client::new()
        .post(format!("{url}/messaging/v1/topics"))
        .bearer_auth(&key)
        .json(&json!({"name": "bench"}))
        .send()
        .await?;
    ensure!(created.status().is_success(), "topic: {}", created.status());
    Ok((process, System::Plinth { url, key }))
}

async fn start_nats(setup: &Setup, dir: &Path, sync: bool) -> anyhow::Result<(Process, System)> {
    let port = free_port()?;
    let store = dir.join("jetstream");
    let sync_line = if sync {
        "  sync_interval: always\n"
    } else {
        ""
    };
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{sync_line}}}\n",
        store.display()
    );
    let config_path = dir.join("nats.conf");
    std::fs::write(&config_path, config)?;
    let child = Command::new(&setup.nats)
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", setup.nats.display()))?;
    let process = Process(child);
    wait_for_port(port).await?;
    let url = format!("nats://127.0.0.1:{port}");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "bench".into(),
        subjects: vec!["bench.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok((process, System::Nats { url }))
}

fn start_redis(setup: &Setup, dir: &Path, sync: bool) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let mut command = Command::new(&setup.redis);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--protected-mode", "no"]);
    if sync {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", setup.redis.display()))?;
    Ok((Process(child), port))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// One durability setting: each system's cells, then the table.
async fn run_setting(setup: &Setup, sync: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (plinth_process, plinth) = start_plinth(setup, &dir.path().join("plinth")).await?;
    let nats_dir = dir.path().join("nats");
    std::fs::create_dir_all(&nats_dir)?;
    let (nats_process, nats) = start_nats(setup, &nats_dir, sync).await?;
    let redis_dir = dir.path().join("redis");
    std::fs::create_dir_all(&redis_dir)?;
    let (redis_process, redis_port) = start_redis(setup, &redis_dir, sync)?;
    wait_for_port(redis_port).await?;
    let redis = System::Redis {
        url: format!("redis://127.0.0.1:{redis_port}/"),
    };
    let systems: [(&str, &System); 3] =
        [("Plinth", &plinth), ("JetStream", &nats), ("Redis", &redis)];

    let label = if sync {
        "fsync before every acknowledgement (Plinth: its only mode; JetStream `sync_interval: always`; Redis `appendfsync always`)"
    } else {
        "each system's default (Plinth: still fsync before every acknowledgement; JetStream: sync every 2 min; Redis: no append-only file)"
    };
    if setup.seconds > 0.0 {
        println!("\n### Publish throughput, {label}\n");
        println!(
            "| value | clients x batch | Plinth msg/s (p50 / p99 ms) | JetStream msg/s (p50 / p99 ms) | Redis msg/s (p50 / p99 ms) | Plinth / JetStream | Plinth / Redis |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (size_label, size) in SIZES {
            let value = Bytes::from("x".repeat(*size));
            for shape in SHAPES {
                let mut cells = Vec::new();
                for (_, system) in systems {
                    cells.push(run_cell(system, &value, *shape, setup.seconds).await?);
                }
                let show = |c: &Cell| format!("{:.0} ({} / {})", c.per_sec, ms(c.p50), ms(c.p99));
                println!(
                    "| {size_label} | {} x {} | {} | {} | {} | {:.2}x | {:.2}x |",
                    shape.0,
                    shape.1,
                    show(&cells[0]),
                    show(&cells[1]),
                    show(&cells[2]),
                    cells[0].per_sec / cells[1].per_sec,
                    cells[0].per_sec / cells[2].per_sec,
                );
            }
        }
    }

    println!("\n### Publish-to-delivery latency at {LATENCY_RATE} msg/s, {label}\n");
    println!("| system | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, system) in systems {
        let (p50, p99) = latency(system, setup.latency_seconds).await?;
        println!("| {name} | {} | {} |", ms(p50), ms(p99));
    }
    drop((plinth_process, nats_process, redis_process));
    Ok(())
}

/// Runs both settings.
pub(crate) async fn run(setup: &Setup) -> anyhow::Result<()> {
    for binary in [&setup.plinth, &setup.nats, &setup.redis] {
        if !binary.exists() {
            bail!(
                "{} not found (bench/run-messaging.sh installs the peers)",
                binary.display()
            );
        }
    }
    println!(
        "Each cell runs {} s per system; one machine, all on loopback.",
        setup.seconds
    );
    run_setting(setup, true).await?;
    run_setting(setup, false).await?;
    Ok(())
}
