//! The admin commands of `plinth`: projects, API keys, quotas, usage and tokens, each one or a
//! few SDK calls against a running server.
//!
//! Output is for people by default: aligned columns, times in UTC. With `--json` a command
//! prints the response body as pretty JSON instead, for scripts; a command whose response has
//! no body (`project delete`) then prints nothing.
//!
//! - `project`: `plinth project create|list|get|delete`.
//! - `key`: `plinth key create|list|revoke|rotate` and `plinth token`.
//! - `quota`: `plinth quota get|set` and `plinth usage`.
//! - `ls`, `cp`: `plinth ls` and `plinth cp`, with a project's key or token.
//! - `messaging`: `plinth topic|subscription create|list|delete`, `plinth publish` and
//!   `plinth consume`.
//! - `search`: `plinth index create|list|get|delete`, `plinth import` and `plinth search`.

mod cp;
mod key;
mod ls;
mod messaging;
mod project;
mod quota;
mod search;

use std::fmt::Display;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

use plinth_sdk::types::console::{Page, PageQuery};
use plinth_sdk::{Client, ClientBuilder};

// The admin commands, flattened into `plinth`'s own subcommands. A doc comment here would
// become the help text of `plinth` itself.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Create, list, show and delete projects.
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// Create, list, revoke and rotate a project's API keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Show and change a project's quotas.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Show a project's daily usage counters.
    Usage(quota::UsageArgs),
    /// Exchange the configured credential for a short-lived access token and print it.
    Token(key::TokenArgs),
    /// List the project's buckets, or the objects of one.
    Ls(ls::LsArgs),
    /// Copy a file to an object, an object to a file, or an object to another, server-side.
    Cp(cp::CpArgs),
    /// Create, list and delete topics.
    #[command(subcommand)]
    Topic(messaging::TopicCommand),
    /// Create, list and delete subscriptions.
    #[command(subcommand)]
    Subscription(messaging::SubscriptionCommand),
    /// Publish one message, or one per line of stdin.
    Publish(messaging::PublishArgs),
    /// Print a subscription's messages as JSON lines, and acknowledge them.
    Consume(messaging::ConsumeArgs),
    /// Create, list, show and delete search indexes.
    #[command(subcommand)]
    Index(search::IndexCommand),
    /// Load a JSON array or NDJSON file of documents into an index, with a summary of the
    /// documents it refused.
    Import(search::ImportArgs),
    /// Search an index.
    Search(search::SearchArgs),
}

/// What the global flags say about reaching the server and printing the answer.
#[derive(Debug)]
pub(crate) struct AdminOptions {
    /// The server's base URL; `PLINTH_URL`, else the SDK's default, when absent.
    pub(crate) url: Option<String>,
    /// The bearer credential; `PLINTH_TOKEN` when absent.
    pub(crate) token: Option<String>,
    /// Print response JSON instead of tables.
    pub(crate) json: bool,
}

/// Runs one admin command.
pub(crate) async fn run(command: AdminCommand, options: AdminOptions) -> anyhow::Result<()> {
    let timeout = if let AdminCommand::Cp(args) = &command {
        Some(args.timeout())
    } else {
        None
    };
    let client = connect(options.url, options.token, timeout)?;
    let output = Output { json: options.json };

    match command {
        AdminCommand::Project(command) => project::run(&client, output, command).await,
        AdminCommand::Key(command) => key::run(&client, output, command).await,
        AdminCommand::Quota(command) => quota::run(&client, output, command).await,
        AdminCommand::Usage(args) => quota::usage(&client, output, args).await,
        AdminCommand::Token(args) => key::token(&client, output, args).await,
        AdminCommand::Ls(args) => ls::ls(&client, output, args).await,
        AdminCommand::Cp(args) => cp::cp(&client, output, args).await,
        AdminCommand::Topic(command) => messaging::topic(&client, output, command).await,
        AdminCommand::Subscription(command) => {
            messaging::subscription(&client, output, command).await
        }
        AdminCommand::Publish(args) => messaging::publish(&client, output, args).await,
        AdminCommand::Consume(args) => messaging::consume(&client, args).await,
        AdminCommand::Index(command) => search::index(&client, output, command).await,
        AdminCommand::Import(args) => search::import(&client, output, args).await,
        AdminCommand::Search(args) => search::search(&client, output, args).await,
    }
}

/// Builds the client from the environment, with the flags taking precedence; `timeout`
/// replaces the SDK's default for commands that transfer whole objects.
fn connect(
    url: Option<String>,
    token: Option<String>,
    timeout: Option<Duration>,
) -> anyhow::Result<Client> {
    let mut builder = ClientBuilder::from_env();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(url) = url {
        builder = builder.base_url(url);
    }
    if let Some(token) = token {
        builder = builder.token(token);
    }

    builder.build().context("cannot set up the client")
}

/// How a command prints its result.
#[derive(Clone, Copy, Debug)]
struct Output {
    json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON with `--json`, else the way `human` renders it.
    fn show<T: Serialize>(self, value: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            human(value);
        }
        Ok(())
    }

    /// Prints a line for people; nothing with `--json`.
    fn say(self, line: impl Display) {
        if !self.json {
            println!("{line}");
        }
    }
}

/// Fetches one page of at most `limit` items or, without a limit, every page by following the
/// cursors, and returns the items as a single last page.
async fn pages<T>(
    limit: Option<u32>,
    mut fetch: impl AsyncFnMut(PageQuery) -> Result<Page<T>, plinth_sdk::Error>,
) -> anyhow::Result<Page<T>> {
    if limit.is_some() {
        return Ok(fetch(PageQuery {
            limit,
            cursor: None,
        })
        .await?);
    }

    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(PageQuery {
            limit: None,
            cursor,
        })
        .await?;
        items.extend(page.items);
        cursor = page.next_cursor;
        if cursor.is_none() {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
    }
}

/// Tells the reader, on stderr, that `--limit` cut a listing short.
fn note_truncated<T>(page: &Page<T>) {
    if page.next_cursor.is_some() {
        eprintln!(
            "(first {} shown; drop --limit to list them all)",
            page.items.len()
        );
    }
}

/// Prints a table: the header, then one line per row, each column as wide as its widest cell
/// and two spaces between columns.
fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }

    print_row(&widths, header.iter().copied());
    for row in rows {
        print_row(&widths, row.iter().map(String::as_str));
    }
}

fn print_row<'a>(widths: &[usize], cells: impl Iterator<Item = &'a str>) {
    let mut line = String::new();
    for (column, (cell, width)) in cells.zip(widths).enumerate() {
        if column > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
    }
    println!("{}", line.trim_end());
}

/// Formats a time in UTC to the second: `2025-01-31 09:30:00Z`.
fn show_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    format!(
        "{} {:02}:{:02}:{:02}Z",
        at.date(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Formats an optional value, `-` when absent.
fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn times_are_shown_in_utc_to_the_second() {
        let at = datetime!(2025-01-31 10:30:00.123 +01:00);

        assert_eq!(show_time(at), "2025-01-31 09:30:00Z");
    }

    #[tokio::test]
    async fn pages_follow_cursors_without_a_limit() {
        let mut asked = Vec::new();

        let all = pages(None, async |query: PageQuery| {
            asked.push(query.cursor.clone());
            let next_cursor = query.cursor.is_none().then(|| "c1".to_owned());
            Ok(Page {
                items: vec![asked.len()],
                next_cursor,
            })
        })
        .await
        .unwrap();

        assert_eq!(all.items, [1, 2]);
        assert_eq!(asked, [None, Some("c1".to_owned())]);
    }
}
