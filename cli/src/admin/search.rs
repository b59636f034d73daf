//! `plinth index create|list|get|delete`, `plinth import INDEX FILE` and
//! `plinth search INDEX QUERY`, with a project's key or token.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use plinth_sdk::types::search::{
    Analyzer, CreateIndex, FieldSchema, FieldType, Index, IndexSchema, OnError, SearchRequest,
};
use plinth_sdk::{BulkOptions, BulkSummary, Client, SearchPage};
use serde_json::Value;
use tokio::io::AsyncBufReadExt as _;

use super::{Output, print_table, show_time};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum IndexCommand {
    /// Create an index, its schema from `--field`s or from a JSON file.
    Create(CreateArgs),
    /// List the project's indexes.
    List,
    /// Show an index: its schema, settings, documents and bytes.
    Get {
        /// The index's name.
        name: String,
    },
    /// Delete an index and every document in it.
    Delete {
        /// The index's name.
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// 1 to 128 letters, digits, `.`, `_` and `-`.
    name: String,
    /// A field, `NAME:TYPE[:OPTION...]`: TYPE is text, keyword, integer, float, boolean or
    /// date; OPTIONs are sortable, facet, unstored, unindexed, and for text the analyzer
    /// (default, english, cjk). Repeatable.
    #[arg(long = "field", value_name = "NAME:TYPE[:OPTION...]", value_parser = parse_field)]
    #[arg(required_unless_present = "schema", conflicts_with = "schema")]
    fields: Vec<FieldSchema>,
    /// The primary key (a keyword or integer field); with `--field`s, by default `id`.
    #[arg(long, value_name = "FIELD")]
    primary_key: Option<String>,
    /// The schema as JSON (`{"primary_key": ..., "fields": [...]}`), from a file or `-`
    /// for stdin.
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,
}

fn parse_field(text: &str) -> Result<FieldSchema, String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default().to_owned();
    let field_type = match parts.next() {
        Some("text") => FieldType::Text,
        Some("keyword") => FieldType::Keyword,
        Some("integer") => FieldType::Integer,
        Some("float") => FieldType::Float,
        Some("boolean") => FieldType::Boolean,
        Some("date") => FieldType::Date,
        Some(other) => return Err(format!("`{other}` is not a field type")),
        None => return Err("write NAME:TYPE, e.g. title:text".into()),
    };
    let mut field = FieldSchema {
        name,
        field_type,
        stored: true,
        indexed: true,
        sortable: false,
        facet: false,
        analyzer: None,
    };
    for option in parts {
        match option {
            "sortable" => field.sortable = true,
            "facet" => field.facet = true,
            "unstored" => field.stored = false,
            "unindexed" => field.indexed = false,
            "default" => field.analyzer = Some(Analyzer::Default),
            "english" => field.analyzer = Some(Analyzer::English),
            "cjk" => field.analyzer = Some(Analyzer::Cjk),
            other => return Err(format!("`{other}` is not a field option")),
        }
    }
    Ok(field)
}

pub(super) async fn index(
    client: &Client,
    output: Output,
    command: IndexCommand,
) -> anyhow::Result<()> {
    match command {
        IndexCommand::Create(args) => {
            let schema = match &args.schema {
                Some(path) => {
                    let text = if path.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        std::fs::read_to_string(path)
                            .with_context(|| format!("cannot read {}", path.display()))?
                    };
                    serde_json::from_str(&text).context("the schema is not valid JSON")?
                }
                None => IndexSchema {
                    primary_key: args.primary_key.clone().unwrap_or_else(|| "id".into()),
                    fields: args.fields,
                    default_search_fields: Vec::new(),
                },
            };
            let request = CreateIndex {
                name: args.name,
                schema,
                settings: Default::default(),
            };
            let index = client.create_index(&request).await?;
            output.show(&index, |index| {
                println!(
                    "Created index {} ({} fields, primary key {}).",
                    index.name,
                    index.schema.fields.len(),
                    index.schema.primary_key
                );
            })
        }
        IndexCommand::List => {
            let indexes = client.list_indexes().await?;
            output.show(&indexes, |indexes| {
                let rows: Vec<_> = indexes.iter().map(index_row).collect();
                print_table(["NAME", "FIELDS", "PRIMARY KEY", "CREATED"], &rows);
            })
        }
        IndexCommand::Get { name } => {
            let index = client.get_index(&name).await?;
            output.show(&index, print_index)
        }
        IndexCommand::Delete { name } => {
            client.delete_index(&name).await?;
            output.say(format!("Deleted index {name}."));
            Ok(())
        }
    }
}

fn index_row(index: &Index) -> [String; 4] {
    [
        index.name.clone(),
        index.schema.fields.len().to_string(),
        index.schema.primary_key.clone(),
        show_time(index.created_at),
    ]
}

fn print_index(index: &Index) {
    println!(
        "Index {}, created {}",
        index.name,
        show_time(index.created_at)
    );
    if let Some(stats) = &index.stats {
        println!("{} documents, {} bytes", stats.documents, stats.bytes);
    }
    let rows: Vec<[String; 3]> = index
        .schema
        .fields
        .iter()
        .map(|f| {
            let mut options = Vec::new();
            if f.name == index.schema.primary_key {
                options.push("primary key");
            }
            if f.sortable {
                options.push("sortable");
            }
            if f.facet {
                options.push("facet");
            }
            if !f.stored {
                options.push("unstored");
            }
            if !f.indexed {
                options.push("unindexed");
            }
            let field_type = serde_json::to_value(f.field_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            [f.name.clone(), field_type, options.join(", ")]
        })
        .collect();
    print_table(["FIELD", "TYPE", "OPTIONS"], &rows);
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The index to load.
    index: String,
    /// A JSON array of documents, or NDJSON (one document a line); `-` for stdin.
    file: PathBuf,
    /// Documents per request.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Stop at the first batch holding a document that does not fit the schema, instead
    /// of loading the rest and listing the bad ones.
    #[arg(long)]
    refuse: bool,
}

/// How many rejected documents the summary lists.
const LISTED_REJECTS: usize = 20;

pub(super) async fn import(
    client: &Client,
    output: Output,
    args: ImportArgs,
) -> anyhow::Result<()> {
    let (reader, size): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64) =
        if args.file.as_os_str() == "-" {
            (Box::new(tokio::io::stdin()), 0)
        } else {
            let file = tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("cannot open {}", args.file.display()))?;
            let size = file.metadata().await?.len();
            (Box::new(file), size)
        };
    let bar = (!output.json && std::io::stderr().is_terminal() && size > 0).then(|| {
        let template = "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::new(size).with_style(style)
    });
    let options = BulkOptions {
        batch_documents: args.batch.max(1),
        on_error: if args.refuse {
            OnError::Refuse
        } else {
            OnError::Skip
        },
        ..BulkOptions::default()
    };
    let mut loader = client.bulk_loader(&args.index, options);
    let mut reader = tokio::io::BufReader::new(match &bar {
        Some(bar) => {
            Box::new(bar.wrap_async_read(reader)) as Box<dyn tokio::io::AsyncRead + Send + Unpin>
        }
        None => reader,
    });
    let first = reader.fill_buf().await?;
    let is_array = first
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'[');
    if is_array {
        // A JSON array is read element by element on a blocking thread, so a file larger
        // than memory still loads.
        let (lines, mut incoming) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        let reader = tokio_util::io::SyncIoBridge::new(reader);
        let parsing = tokio::task::spawn_blocking(move || split_array(reader, &lines));
        while let Some(line) = incoming.recv().await {
            loader.add_line(&line).await?;
            if let Some(bar) = &bar {
                bar.set_message(format!("{} applied", loader.progress().applied));
            }
        }
        parsing.await??;
    } else {
        let mut lines = reader.split(b'\n');
        while let Some(line) = lines.next_segment().await? {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            loader.add_line(&line).await?;
            if let Some(bar) = &bar {
                bar.set_message(format!("{} applied", loader.progress().applied));
            }
        }
    }
    let summary = loader.finish(true).await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    output.show(&summary_json(&summary), |_| {
        print_summary(&args.index, &summary)
    })
}

/// Reads a JSON array and sends each element as one line of JSON.
fn split_array(
    reader: impl std::io::Read,
    lines: &tokio::sync::mpsc::Sender<Vec<u8>>,
) -> anyhow::Result<()> {
    struct Elements<'a>(&'a tokio::sync::mpsc::Sender<Vec<u8>>);

    impl<'de> serde::de::Visitor<'de> for Elements<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of documents")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(element) = seq.next_element::<Value>()? {
                let line = serde_json::to_vec(&element).map_err(serde::de::Error::custom)?;
                if self.0.blocking_send(line).is_err() {
                    // The loader stopped; its error is the one to report.
                    break;
                }
            }
            Ok(())
        }
    }

    let mut deserializer = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    serde::Deserializer::deserialize_seq(&mut deserializer, Elements(lines))
        .context("the file is not a JSON array of documents")?;
    Ok(())
}

fn summary_json(summary: &BulkSummary) -> Value {
    serde_json::json!({
        "sent": summary.sent,
        "applied": summary.applied,
        "rejected_total": summary.rejected_total,
        "rejected": summary.rejected,
    })
}

fn print_summary(index: &str, summary: &BulkSummary) {
    println!(
        "Imported {} of {} documents into {index}.",
        summary.applied, summary.sent
    );
    if summary.rejected_total == 0 {
        return;
    }
    println!("{} rejected:", summary.rejected_total);
    let rows: Vec<[String; 3]> = summary
        .rejected
        .iter()
        .take(LISTED_REJECTS)
        .map(|r| [r.position.to_string(), r.field.clone(), r.reason.clone()])
        .collect();
    print_table(["POSITION", "FIELD", "REASON"], &rows);
    if summary.rejected_total > rows.len() as u64 {
        println!(
            "(first {} shown; --json lists those the server named)",
            rows.len()
        );
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct SearchArgs {
    /// The index to search.
    index: String,
    /// The query: words, "phrases", -excluded, field:word, word^2.
    #[arg(default_value = "")]
    query: String,
    /// A filter in JSON (`{"field": "price", "lt": 20}`).
    #[arg(long, value_name = "JSON")]
    filter: Option<String>,
    /// Sort by a sortable field, `FIELD`, `FIELD:asc` or `FIELD:desc` (repeatable).
    #[arg(long, value_name = "FIELD[:ORDER]")]
    sort: Vec<String>,
    /// Count the values of a facet field (repeatable).
    #[arg(long, value_name = "FIELD")]
    facet: Vec<String>,
    /// Show a snippet of a text field with the matches marked (repeatable).
    #[arg(long, value_name = "FIELD")]
    highlight: Vec<String>,
    /// Hits to show.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// The `next` cursor of an earlier page.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
}

pub(super) async fn search(
    client: &Client,
    output: Output,
    args: SearchArgs,
) -> anyhow::Result<()> {
    let filter = match &args.filter {
        Some(text) => Some(serde_json::from_str(text).context("--filter is not valid JSON")?),
        None => None,
    };
    let request = SearchRequest {
        q: args.query,
        filter,
        limit: Some(args.limit),
        sort: args.sort,
        after: args.after,
        facets: args.facet,
        highlight: args.highlight,
        ..SearchRequest::default()
    };
    let page: SearchPage<Value> = client.search(&args.index, request).await?;
    if output.json {
        let hits: Vec<Value> = page
            .hits
            .iter()
            .map(|h| serde_json::json!({"id": h.id, "score": h.score, "document": h.document, "highlights": h.highlights}))
            .collect();
        let body = serde_json::json!({
            "hits": hits, "total": page.total, "facets": page.facets,
            "next": page.next, "took_ms": page.took_ms,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print_hits(&page);
    Ok(())
}

/// Longest document summary in the hit table, in characters.
const SHOWN_CHARS: usize = 80;

fn print_hits(page: &SearchPage<Value>) {
    let rows: Vec<[String; 3]> = page
        .hits
        .iter()
        .map(|hit| {
            let shown = if hit.highlights.is_empty() {
                hit.document.to_string()
            } else {
                hit.highlights
                    .iter()
                    .map(|(field, snippet)| format!("{field}: {snippet}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let mut shown: String = shown.chars().take(SHOWN_CHARS).collect();
            if shown.chars().count() == SHOWN_CHARS {
                shown.push('…');
            }
            let id = match &hit.id {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            [id, format!("{:.3}", hit.score), shown]
        })
        .collect();
    print_table(["ID", "SCORE", "DOCUMENT"], &rows);
    println!(
        "{} of {} hits in {:.1} ms.",
        page.hits.len(),
        page.total,
        page.took_ms
    );
    for (field, counts) in &page.facets {
        let counts: Vec<String> = counts
            .iter()
            .map(|c| format!("{} ({})", c.value, c.count))
            .collect();
        println!("{field}: {}", counts.join(", "));
    }
    if let Some(next) = &page.next {
        println!("More: --after {next}");
    }
}
