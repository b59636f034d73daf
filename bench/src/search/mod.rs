//! `search`: indexing throughput and query latency and throughput of Plinth (a real
//! `plinth serve` over HTTP with an API key), raw tantivy in this process (the ceiling), and
//! PostgreSQL full-text search, on one generated corpus, in one run.
//!
//! The corpus: `--documents` products (title, body, tags, price, date), generated from a
//! seeded pseudo-random source so every system gets the same documents, as NDJSON lines.
//! Words come from a vocabulary of 20,000 made-up words drawn log-uniformly, so a few are
//! very common and most are rare, as in text.
//!
//! Indexing: Plinth loads the lines through NDJSON imports of 5,000 documents, two in
//! flight, until the last is searchable. tantivy parses the same lines with serde_json and
//! indexes them with the same writer settings as a Plinth index (one indexing thread,
//! 32 MiB), committing once at the end. PostgreSQL takes them with `COPY` into a table with
//! a stored, generated `tsvector` (English, title weighted above body), then builds a GIN
//! index on it; both count.
//!
//! Queries: a fixed mix of one common word, one rare word, two words, a phrase, a prefix,
//! and two words with a price filter, each asking for the best 20 and the total count
//! (PostgreSQL: `ts_rank` order and `count(*) OVER ()`). tantivy spreads a search's
//! segments over as many threads as a Plinth server does by default. Latency: the mix one
//! query at a time, the median and 99th percentile of each kind too; throughput: 8 clients
//! for a few seconds.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{EnableScoring, QueryParser};
use tantivy::schema::{FAST, INDEXED, STORED, STRING, Schema, TEXT};
use tantivy::{Index, IndexReader, TantivyDocument};

use self::corpus::{Probe, document, probes};
use crate::process::{Process, start_plinth};

mod corpus;

/// The threads tantivy spreads a search's segments over: as many as a Plinth server uses by
/// default (`search_query_threads`: the cores, at most 8), so that the ceiling has the same
/// means.
static SEGMENT_THREADS: std::sync::LazyLock<tantivy::Executor> = std::sync::LazyLock::new(|| {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(8);
    tantivy::Executor::multi_thread(threads, "bench-tantivy-").expect("search threads")
});

/// Documents per Plinth import.
const BATCH: usize = 5_000;
/// Clients of the throughput run.
const CLIENTS: usize = 8;

/// How the search benchmark runs.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) plinth: std::path::PathBuf,
    /// A PostgreSQL database to load (`bench/run-search.sh` starts a throwaway cluster).
    pub(crate) pg_url: String,
    pub(crate) documents: usize,
    /// Queries of the latency run per system.
    pub(crate) queries: usize,
    /// Seconds of the throughput run per system.
    pub(crate) seconds: f64,
}

/// A system under test, loaded.
enum System {
    Plinth {
        url: String,
        key: String,
        _process: Process,
    },
    Tantivy {
        reader: IndexReader,
        parser: QueryParser,
        fields: [tantivy::schema::Field; 2],
    },
    Postgres {
        url: String,
    },
}

/// How long a load took, and how much it moved.
struct Load {
    seconds: f64,
    bytes: usize,
}

async fn load_plinth(
    setup: &Setup,
    dir: &Path,
    lines: &[String],
) -> anyhow::Result<(System, Load)> {
    let (process, url, admin) = start_plinth(&setup.plinth, dir, &[]).await?;
    let key = crate::process::project_key(&url, &admin, &["search:read", "search:write"]).await?;
    let client = plinth_sdk::Client::builder()
        .base_url(&url)
        .token(&key)
        .timeout(Duration::from_secs(600))
        .build()?;
    let index: plinth_types::search::CreateIndex = serde_json::from_value(json!({
        "name": "bench",
        "schema": {"primary_key": "id", "fields": [
            {"name": "id", "type": "keyword"},
            {"name": "title", "type": "text"},
            {"name": "body", "type": "text"},
            {"name": "tags", "type": "keyword", "facet": true},
            {"name": "price", "type": "float", "sortable": true},
            {"name": "date", "type": "date", "sortable": true}
        ]}
    }))?;
    client.create_index(&index).await?;
    let options = plinth_sdk::BulkOptions {
        batch_documents: BATCH,
        batch_bytes: 64 * 1024 * 1024,
        in_flight: 2,
        on_error: plinth_types::search::OnError::Refuse,
    };
    let started = Instant::now();
    let mut loader = client.bulk_loader("bench", options);
    let mut bytes = 0;
    for line in lines {
        bytes += line.len() + 1;
        loader.add_line(line.as_bytes()).await?;
    }
    let summary = loader.finish(true).await?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        summary.applied == setup.documents as u64,
        "Plinth applied {} of {}",
        summary.applied,
        setup.documents
    );
    Ok((
        System::Plinth {
            url,
            key,
            _process: process,
        },
        Load { seconds, bytes },
    ))
}

#[derive(Deserialize)]
struct Product {
    id: String,
    title: String,
    body: String,
    tags: Vec<String>,
    price: f64,
    date: String,
}

fn load_tantivy(dir: &Path, lines: &[String]) -> anyhow::Result<(System, Load)> {
    let mut builder = Schema::builder();
    let id = builder.add_text_field("id", STRING | STORED);
    let title = builder.add_text_field("title", TEXT);
    let body = builder.add_text_field("body", TEXT);
    let tags = builder.add_text_field("tags", STRING | FAST);
    let price = builder.add_f64_field("price", INDEXED | FAST);
    let date = builder.add_date_field("date", INDEXED | FAST);
    let source = builder.add_bytes_field("source", STORED);
    let index = Index::create_in_dir(dir, builder.build())?;
    let options = tantivy::indexer::IndexWriterOptions::builder()
        .memory_budget_per_thread(32 * 1024 * 1024)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    let mut writer: tantivy::IndexWriter = index.writer_with_options(options)?;
    let bytes = lines.iter().map(|l| l.len() + 1).sum();
    let started = Instant::now();
    for line in lines {
        let p: Product = serde_json::from_str(line)?;
        let at =
            time::OffsetDateTime::parse(&p.date, &time::format_description::well_known::Rfc3339)?;
        let mut doc = TantivyDocument::default();
        doc.add_text(id, &p.id);
        doc.add_text(title, &p.title);
        doc.add_text(body, &p.body);
        for tag in &p.tags {
            doc.add_text(tags, tag);
        }
        doc.add_f64(price, p.price);
        doc.add_date(date, tantivy::DateTime::from_utc(at));
        // Stored as Plinth stores it: the document's JSON, returned with each hit.
        doc.add_bytes(source, line.as_bytes());
        writer.add_document(doc)?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    let seconds = started.elapsed().as_secs_f64();
    let reader = index.reader()?;
    ensure!(reader.searcher().num_docs() == lines.len() as u64);
    let parser = QueryParser::for_index(&index, vec![title, body]);
    let fields = [title, body];
    Ok((
        System::Tantivy {
            reader,
            parser,
            fields,
        },
        Load { seconds, bytes },
    ))
}

/// Quotes a value for `COPY ... FROM STDIN` in text format.
fn copy_field(text: &str, into: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => into.push_str("\\\\"),
            '\t' => into.push_str("\\t"),
            '\n' => into.push_str("\\n"),
            c => into.push(c),
        }
    }
}

async fn load_postgres(url: &str, lines: &[String]) -> anyhow::Result<(System, Load)> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql("DROP TABLE IF EXISTS docs")
        .execute(&mut conn)
        .await?;
    sqlx::raw_sql(
        "CREATE TABLE docs (id text PRIMARY KEY, title text, body text, tags text[], \
         price float8, date timestamptz, source jsonb, \
         tsv tsvector GENERATED ALWAYS AS (setweight(to_tsvector('english', title), 'A') || \
         setweight(to_tsvector('english', body), 'B')) STORED)",
    )
    .execute(&mut conn)
    .await?;
    let bytes = lines.iter().map(|l| l.len() + 1).sum();
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY docs (id, title, body, tags, price, date, source) FROM STDIN")
        .await?;
    let mut chunk = String::new();
    for line in lines {
        let p: Product = serde_json::from_str(line)?;
        for (n, text) in [&p.id, &p.title, &p.body].into_iter().enumerate() {
            if n > 0 {
                chunk.push('\t');
            }
            copy_field(text, &mut chunk);
        }
        chunk.push('\t');
        chunk.push('{');
        chunk.push_str(&p.tags.join(","));
        chunk.push('}');
        chunk.push_str(&format!("\t{}\t{}\t", p.price, p.date));
        copy_field(line, &mut chunk);
        chunk.push('\n');
        if chunk.len() > 1 << 20 {
            copy.send(chunk.as_bytes()).await?;
            chunk.clear();
        }
    }
    copy.send(chunk.as_bytes()).await?;
    copy.finish().await?;
    sqlx::raw_sql("CREATE INDEX docs_tsv ON docs USING gin (tsv); CREATE INDEX docs_price ON docs (price); ANALYZE docs")
        .execute(&mut conn)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        System::Postgres {
            url: url.to_owned(),
        },
        Load { seconds, bytes },
    ))
}

/// A connection of one client to a system.
enum Client {
    Plinth {
        http: reqwest::Client,
        url: String,
        key: String,
    },
    Tantivy {
        reader: IndexReader,
        parser: QueryParser,
        fields: [tantivy::schema::Field; 2],
    },
    Postgres(PgConnection),
}

impl System {
    async fn client(&self) -> anyhow::Result<Client> {
        Ok(match self {
            System::Plinth { url, key, .. } => Client::Plinth {
                http: reqwest::Client::new(),
                url: format!("{url}/search/v1/indexes/bench/search"),
                key: key.clone(),
            },
            System::Tantivy {
                reader,
                parser,
                fields,
            } => Client::Tantivy {
                reader: reader.clone(),
                parser: parser.clone(),
                fields: *fields,
            },
            System::Postgres { url } => Client::Postgres(PgConnection::connect(url).await?),
        })
    }
}

impl Client {
    /// Runs one query; returns the total count.
    async fn query(&mut self, probe: &Probe) -> anyhow::Result<u64> {
        match self {
            Client::Plinth { http, url, key } => {
                let response = http
                    .post(url.as_str())
                    .bearer_auth(&key)
                    .json(&probe.plinth)
                    .send()
                    .await?;
                ensure!(
                    response.status().is_success(),
                    "Plinth answered {}",
                    response.status()
                );
                let body: Value = response.json().await?;
                body["total"].as_u64().context("total")
            }
            Client::Tantivy {
                reader,
                parser,
                fields,
            } => {
                let query: Box<dyn tantivy::query::Query> = if probe.tantivy_prefix {
                    let parts = fields
                        .iter()
                        .map(|&field| {
                            let term = tantivy::Term::from_field_text(field, &probe.tantivy);
                            let prefix = tantivy::query::FuzzyTermQuery::new_prefix(term, 0, true);
                            (
                                tantivy::query::Occur::Should,
                                Box::new(prefix) as Box<dyn tantivy::query::Query>,
                            )
                        })
                        .collect();
                    Box::new(tantivy::query::BooleanQuery::new(parts))
                } else {
                    parser.parse_query(&probe.tantivy)?
                };
                // Blocking work, as a search in Plinth runs on a blocking thread.
                let reader = reader.clone();
                let total = tokio::task::spawn_blocking(move || -> tantivy::Result<u64> {
                    let searcher = reader.searcher();
                    let scoring = EnableScoring::enabled_from_searcher(&searcher);
                    let (top, total) = searcher.search_with_executor(
                        &query,
                        &(TopDocs::with_limit(20).order_by_score(), Count),
                        &SEGMENT_THREADS,
                        scoring,
                    )?;
                    for (_, address) in top {
                        let _: TantivyDocument = searcher.doc(address)?;
                    }
                    Ok(total as u64)
                })
                .await??;
                Ok(total)
            }
            Client::Postgres(conn) => {
                let sql = "SELECT source, count(*) OVER () AS total FROM docs \
                           WHERE tsv @@ to_tsquery('english', $1) AND price < $2 \
                           ORDER BY ts_rank(tsv, to_tsquery('english', $1)) DESC LIMIT 20";
                let rows: Vec<(Value, i64)> = sqlx::query_as(sql)
                    .bind(&probe.pg_query)
                    .bind(probe.pg_price_below.unwrap_or(f64::MAX))
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(rows.first().map_or(0, |(_, total)| *total as u64))
            }
        }
    }
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    /// The median and 99th percentile of each kind of query, in the mix's order.
    by_kind: Vec<(&'static str, f64, f64)>,
}

async fn latency(system: &System, probes: &[Probe]) -> anyhow::Result<Latency> {
    let mut client = system.client().await?;
    // Warm caches with one pass of the first tenth.
    for probe in probes.iter().take(probes.len() / 10) {
        client.query(probe).await?;
    }
    let mut samples = Vec::with_capacity(probes.len());
    let mut by_kind: Vec<(&'static str, Vec<f64>)> = Vec::new();
    for probe in probes {
        let started = Instant::now();
        client.query(probe).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        samples.push(ms);
        match by_kind.iter_mut().find(|(kind, _)| *kind == probe.kind) {
            Some((_, kind)) => kind.push(ms),
            None => by_kind.push((probe.kind, vec![ms])),
        }
    }
    let at = |samples: &mut Vec<f64>, q: f64| {
        samples.sort_by(f64::total_cmp);
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
    };
    Ok(Latency {
        p50_ms: at(&mut samples, 0.50),
        p99_ms: at(&mut samples, 0.99),
        by_kind: by_kind
            .into_iter()
            .map(|(kind, mut samples)| (kind, at(&mut samples, 0.50), at(&mut samples, 0.99)))
            .collect(),
    })
}

async fn throughput(system: &System, probes: &[Probe], seconds: f64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(system.client().await?);
    }
    let started = Instant::now();
    let done: Vec<anyhow::Result<usize>> = futures::stream::iter(clients.into_iter().enumerate())
        .map(|(n, mut client)| async move {
            let mut count = 0;
            while Instant::now() < deadline {
                client
                    .query(&probes[(n * 7 + count) % probes.len()])
                    .await?;
                count += 1;
            }
            Ok(count)
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    let mut total = 0;
    for count in done {
        total += count?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(setup: &Setup) -> anyhow::Result<()> {
    let probes = probes(setup.queries.max(60));
    // Generated up front, so that no system's time includes making its input.
    let lines: Vec<String> = (0..setup.documents).map(document).collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    eprintln!(
        "search: {} documents, {:.0} MB of NDJSON",
        setup.documents,
        bytes as f64 / 1e6
    );
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();

    eprintln!("search: loading Plinth");
    let plinth_dir = dir.path().join("plinth");
    std::fs::create_dir_all(&plinth_dir)?;
    let (plinth, plinth_load) = load_plinth(setup, &plinth_dir, &lines).await?;
    eprintln!("search: Plinth took {:.1} s", plinth_load.seconds);
    eprintln!("search: loading tantivy");
    let tantivy_dir = dir.path().join("tantivy");
    std::fs::create_dir_all(&tantivy_dir)?;
    let (tantivy, tantivy_load) =
        tokio::task::block_in_place(|| load_tantivy(&tantivy_dir, &lines))?;
    eprintln!("search: tantivy took {:.1} s", tantivy_load.seconds);
    eprintln!("search: loading PostgreSQL");
    let (postgres, pg_load) = load_postgres(&setup.pg_url, &lines).await?;
    eprintln!("search: PostgreSQL took {:.1} s", pg_load.seconds);
    drop(lines);

    // The same query must find the same number of documents in Plinth and tantivy where
    // both mean the same (a rare word: no typo or prefix widening it in practice).
    for (name, system, load) in [
        ("Plinth (HTTP)", &plinth, &plinth_load),
        ("tantivy (in-process)", &tantivy, &tantivy_load),
        ("PostgreSQL FTS", &postgres, &pg_load),
    ] {
        eprintln!("search: querying {name}");
        let latency = latency(system, &probes).await?;
        let qps = throughput(system, &probes, setup.seconds).await?;
        rows.push((name, load.seconds, load.bytes, latency, qps));
    }

    let (_, plinth_seconds, _, _, plinth_qps) = &rows[0];
    let (plinth_seconds, plinth_qps) = (*plinth_seconds, *plinth_qps);
    println!(
        "| system | index s | docs/s | MB/s | Plinth's indexing ratio | query p50 ms | query p99 ms | queries/s ({CLIENTS} clients) | Plinth's query ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, seconds, bytes, latency, qps) in &rows {
        println!(
            "| {name} | {seconds:.1} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {qps:.0} | {:.2} |",
            setup.documents as f64 / seconds,
            *bytes as f64 / 1e6 / seconds,
            seconds / plinth_seconds,
            latency.p50_ms,
            latency.p99_ms,
            plinth_qps / qps,
        );
    }
    println!(
        "\n| query p50 / p99 ms | {} |",
        rows.iter().map(|r| r.0).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(rows.len()));
    for (n, (kind, _, _)) in rows[0].3.by_kind.iter().enumerate() {
        let cells: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.2} / {:.2}", r.3.by_kind[n].1, r.3.by_kind[n].2))
            .collect();
        println!("| {kind} | {} |", cells.join(" | "));
    }
    println!(
        "\n{} documents ({:.0} MB NDJSON); {} queries per latency run, {:.0} s per throughput run; \
         the ratios are Plinth's speed over each system's (indexing: its time / Plinth's time)",
        setup.documents,
        bytes as f64 / 1e6,
        probes.len(),
        setup.seconds
    );
    drop(plinth);
    Ok(())
}
