//! Benchmarks of Plinth, each side by side with a peer in the same run, reported as ratios.
//!
//! `auth`: the CPU cost of one request through the full HTTP stack on a route that
//! authenticates (API key, then access token) and applies the rate limit and usage counter,
//! against the same handler on a route without auth. Requests are driven in-process on a
//! single-threaded runtime, so wall time per request is CPU time per request and the network
//! adds no noise. Rounds alternate between the variants; the median round is reported.
//!
//! `storage`, `messaging` and `search` each start Plinth and its peers as processes; their
//! modules say how.

mod messaging;
mod process;
mod search;
mod storage;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use clap::{Parser, ValueEnum};
use plinth_shared::Shared;
use plinth_shared::auth::Caller;
use plinth_shared::keys::{self, NewKey};
use plinth_shared::projects::{self, ProjectName};
use plinth_shared::testkit::TestBackend;
use plinth_types::Scope;
use plinth_types::console::{CreateKey, Quotas, TokenRequest};
use tower::ServiceExt;

/// Plinth's side-by-side benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Which benchmark to run.
    #[arg(value_enum, default_value = "auth")]
    bench: Bench,
    /// Requests per round and variant.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
    /// Rounds per variant.
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// The `plinth` binary (storage).
    #[arg(long, default_value = "target/release/plinth")]
    plinth: PathBuf,
    /// The SeaweedFS `weed` binary (storage).
    #[arg(long, default_value = "weed")]
    weed: PathBuf,
    /// The nginx binary (storage).
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// Run only the storage cells whose "OP SIZE" contains this (say "GET 1 MiB"), and skip
    /// the 2 GiB memory run.
    #[arg(long)]
    only: Option<String>,
    /// Rounds per storage cell and system, alternating between the systems; the median
    /// round is reported.
    #[arg(long, default_value_t = 3)]
    cell_rounds: usize,
    /// The `nats-server` binary (messaging).
    #[arg(long, default_value = "nats-server")]
    nats: PathBuf,
    /// The `redis-server` binary (messaging).
    #[arg(long, default_value = "redis-server")]
    redis: PathBuf,
    /// Seconds each messaging cell runs per system; 0 runs only the latency runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of each system's messaging latency run.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Documents of the search corpus.
    #[arg(long, default_value_t = 1_000_000)]
    documents: usize,
    /// Queries of each system's search latency run.
    #[arg(long, default_value_t = 600)]
    queries: usize,
    /// The PostgreSQL database of the search benchmark (`bench/run-search.sh` starts one).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Bench {
    /// Auth and quota overhead per request.
    Auth,
    /// Object PUT and GET against nginx and SeaweedFS.
    Storage,
    /// Publish throughput and publish-to-delivery latency against NATS JetStream and Redis
    /// Streams.
    Messaging,
    /// Indexing throughput and query latency against raw tantivy and PostgreSQL full-text
    /// search.
    Search,
}

/// Requests per variant before the benchmark switches to the next one.
const BLOCK: u32 = 500;

async fn handler() -> &'static str {
    "ok"
}

async fn authed(caller: Caller) -> Result<&'static str, plinth_shared::ApiError> {
    caller.authorize(Scope::StorageRead, "bucket:bench/object")?;
    Ok("ok")
}

/// Sends `requests` identical requests; the open route gets the same `Authorization` header
/// as the authenticated ones and ignores it, so only the server's work differs.
async fn round(
    app: &Router,
    path: &str,
    credential: &str,
    requests: u32,
) -> anyhow::Result<Duration> {
    let authorization = HeaderValue::from_str(&format!("Bearer {credential}"))?;
    let started = Instant::now();
    for _ in 0..requests {
        let request = Request::get(path)
            .header(AUTHORIZATION, authorization.clone())
            .body(Body::empty())?;
        let response = app.clone().oneshot(request).await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "{path} answered {}",
            response.status()
        );
    }
    Ok(started.elapsed() / requests)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn auth_bench(args: &Args) -> anyhow::Result<()> {
    let backend = TestBackend::sqlite();
    let shared = Shared::open(backend.config.clone(), &backend.admin_token).await?;

    // A project whose keys are rate limited far above the benchmark's pace, so the limiter
    // runs on every request without refusing any.
    let mut tx = shared.store().begin().await?;
    let quotas = Quotas {
        requests_per_second: Some(10_000_000),
        request_burst: Some(10_000_000),
        ..Quotas::default()
    };
    let project = projects::create(&mut tx, &ProjectName::parse("bench")?, &quotas).await?;
    let request = CreateKey {
        name: "bench".into(),
        scopes: vec![Scope::StorageRead],
        resources: vec!["bucket:bench/*".into()],
        ..CreateKey::default()
    };
    let key = keys::create(&mut tx, &project.id, &NewKey::parse(&request)?).await?;
    tx.commit().await?;
    let caller = shared.auth().authenticate(&key.secret).await?;
    let token = shared.auth().mint(&caller, &TokenRequest::default())?.token;

    let routes = Router::new()
        .route("/bench/open", get(handler))
        .route("/bench/authed", get(authed))
        .with_state(shared.clone());
    let app = plinth_shared::http::app(routes, utoipa::openapi::OpenApi::default(), &shared);

    // Warm every path: caches, the allocator, the token cache.
    round(&app, "/bench/open", &key.secret, 2_000).await?;
    round(&app, "/bench/authed", &key.secret, 2_000).await?;
    round(&app, "/bench/authed", &token, 2_000).await?;

    // Small interleaved blocks, so that the variants share whatever the machine is doing
    // (frequency changes, a noisy neighbour); each block gives one ratio per variant.
    let (mut open, mut with_key, mut with_token) = (Vec::new(), Vec::new(), Vec::new());
    let (mut key_ratios, mut token_ratios) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds * (args.requests / BLOCK).max(1) {
        let o = round(&app, "/bench/open", &key.secret, BLOCK).await?;
        let k = round(&app, "/bench/authed", &key.secret, BLOCK).await?;
        let t = round(&app, "/bench/authed", &token, BLOCK).await?;
        key_ratios.push(k.as_secs_f64() / o.as_secs_f64());
        token_ratios.push(t.as_secs_f64() / o.as_secs_f64());
        open.push(o);
        with_key.push(k);
        with_token.push(t);
    }
    let micros = |samples: Vec<Duration>| median(samples).as_secs_f64() * 1e6;
    let ratio = |mut ratios: Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };

    println!("| route | µs per request (median block) | ratio to no auth (median block) |");
    println!("|---|---|---|");
    println!("| no auth (peer) | {:.2} | 1.00 |", micros(open));
    println!(
        "| API key | {:.2} | {:.3} |",
        micros(with_key),
        ratio(key_ratios)
    );
    println!(
        "| access token (JWT) | {:.2} | {:.3} |",
        micros(with_token),
        ratio(token_ratios)
    );
    println!(
        "\n{} requests x {} rounds per variant in interleaved blocks of {BLOCK}, warm caches, \
         in-process on one thread",
        args.requests, args.rounds
    );
    shared.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    match args.bench {
        Bench::Auth => runtime.block_on(auth_bench(&args)),
        Bench::Storage => {
            let binaries = storage::Binaries {
                plinth: args.plinth.clone(),
                weed: args.weed.clone(),
                nginx: args.nginx.clone(),
                only: args.only.clone(),
                rounds: args.cell_rounds,
            };
            // The client needs more than one thread to keep 64 requests in flight.
            let runtime = tokio::runtime::Runtime::new().context("start the runtime")?;
            runtime.block_on(storage::run(&binaries))
        }
        Bench::Messaging => {
            let setup = messaging::Setup {
                plinth: args.plinth.clone(),
                nats: args.nats.clone(),
                redis: args.redis.clone(),
                seconds: args.seconds,
                latency_seconds: args.latency_seconds,
            };
            let runtime = tokio::runtime::Runtime::new().context("start the runtime")?;
            runtime.block_on(messaging::run(&setup))
        }
        Bench::Search => {
            let setup = search::Setup {
                plinth: args.plinth.clone(),
                pg_url: args.pg_url.clone(),
                documents: args.documents,
                queries: args.queries,
                seconds: args.seconds,
            };
            let runtime = tokio::runtime::Runtime::new().context("start the runtime")?;
            runtime.block_on(search::run(&setup))
        }
    }
}
