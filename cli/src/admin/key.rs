//! `plinth key`: a project's API keys; and `plinth token`, which mints an access token.

use anyhow::Context;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use plinth_sdk::Client;
use plinth_sdk::types::Scope;
use plinth_sdk::types::console::{
    AccessToken, ApiKey, CreateKey, KeyWithSecret, Page, TokenRequest,
};

use super::{Output, note_truncated, or_dash, pages, print_table, show_time};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Create an API key; its secret is printed once and never again.
    Create(CreateArgs),
    /// List a project's keys, revoked ones included.
    List {
        /// The project's id (`prj_...`).
        #[arg(long)]
        project: String,
        /// Show at most this many (1 to 1000); without it, all of them.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Revoke a key; the tokens minted from it stop working too.
    Revoke {
        /// The project's id (`prj_...`).
        #[arg(long)]
        project: String,
        /// The key's id (`key_...`).
        key: String,
    },
    /// Give a key a new secret; the old one stops working.
    Rotate {
        /// The project's id (`prj_...`).
        #[arg(long)]
        project: String,
        /// The key's id (`key_...`).
        key: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The project's id (`prj_...`).
    #[arg(long)]
    project: String,
    /// A label for people.
    #[arg(long)]
    name: String,
    /// A scope the key grants (repeatable), such as `storage:read`.
    #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// A resource the key is limited to (repeatable), such as `bucket:avatars/*`; without
    /// any, the key reaches every resource of the project.
    #[arg(long = "resource", value_name = "PATTERN")]
    resources: Vec<String>,
    /// Lifetime of the key: a number with a unit, `s`, `m`, `h`, `d` or `w` (`30d`).
    #[arg(long, value_name = "LIFETIME", value_parser = parse_lifetime)]
    #[arg(conflicts_with = "expires_at")]
    expires_in: Option<Duration>,
    /// When the key stops working, RFC 3339 (`2026-01-01T00:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// A scope the token keeps (repeatable); by default all of the credential's.
    #[arg(long = "scope", value_name = "SCOPE", value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// A resource pattern the token is limited to (repeatable); by default the credential's.
    #[arg(long = "resource", value_name = "PATTERN")]
    resources: Vec<String>,
    /// Lifetime in seconds; by default the server's, never beyond the credential's expiry.
    #[arg(long, value_name = "SECONDS")]
    ttl: Option<u64>,
    /// A filter added to every search of an index, as `INDEX=FILTER` with the filter in
    /// JSON (`products={"field":"tenant","eq":"42"}`; `*` for every index); repeatable.
    #[arg(long = "search-filter", value_name = "INDEX=FILTER", value_parser = parse_search_filter)]
    search_filters: Vec<(String, serde_json::Value)>,
}

fn parse_search_filter(text: &str) -> Result<(String, serde_json::Value), String> {
    let (index, filter) = text
        .split_once('=')
        .ok_or("write INDEX=FILTER, the filter in JSON")?;
    let filter = serde_json::from_str(filter).map_err(|err| format!("the filter: {err}"))?;
    Ok((index.to_owned(), filter))
}

pub(super) async fn run(
    client: &Client,
    output: Output,
    command: KeyCommand,
) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create(args) => {
            let project = args.project.clone();
            let request = create_request(args)?;
            let created = client.create_key(&project, &request).await?;
            output.show(&created, |created| print_secret("Created", created))
        }
        KeyCommand::List { project, limit } => {
            let list = async |query| client.list_keys(&project, &query).await;
            let page = pages(limit, list).await?;
            output.show(&page, print_keys)
        }
        KeyCommand::Revoke { project, key } => {
            let revoked = client.revoke_key(&project, &key).await?;
            output.show(&revoked, |revoked| {
                println!(
                    "Revoked key {}; tokens minted from it are refused too.",
                    revoked.id
                );
            })
        }
        KeyCommand::Rotate { project, key } => {
            let rotated = client.rotate_key(&project, &key).await?;
            output.show(&rotated, |rotated| print_secret("Rotated", rotated))
        }
    }
}

/// Mints a token from the configured credential and prints it alone, ready for
/// `PLINTH_TOKEN=$(plinth token ...)`.
pub(super) async fn token(client: &Client, output: Output, args: TokenArgs) -> anyhow::Result<()> {
    let request = TokenRequest {
        scopes: (!args.scopes.is_empty()).then_some(args.scopes),
        resources: (!args.resources.is_empty()).then_some(args.resources),
        ttl_seconds: args.ttl,
        search_filters: (!args.search_filters.is_empty())
            .then(|| args.search_filters.into_iter().collect()),
    };

    let token = client.mint_token(&request).await?;
    output.show(&token, |token: &AccessToken| println!("{}", token.token))
}

/// Turns the flags of `key create` into the request, resolving `--expires-in` against now.
fn create_request(args: CreateArgs) -> anyhow::Result<CreateKey> {
    let expires_at = match args.expires_in {
        Some(lifetime) => Some(
            OffsetDateTime::now_utc()
                .checked_add(lifetime)
                .context("--expires-in reaches beyond the calendar")?,
        ),
        None => args.expires_at,
    };

    Ok(CreateKey {
        name: args.name,
        scopes: args.scopes,
        resources: args.resources,
        expires_at,
        rate_limit: None,
    })
}

/// Prints a key's secret so that it stands out, with the warning that it is not shown again.
fn print_secret(done: &str, created: &KeyWithSecret) {
    let key = &created.key;
    println!(
        "{done} key {} ({}) in project {}.",
        key.id, key.name, key.project_id
    );
    println!();
    println!("    {}", created.secret);
    println!();
    println!("This secret is shown only once: store it now, it cannot be retrieved later.");
}

/// The columns of `key list`, as [`key_row`] fills them.
const KEY_COLUMNS: [&str; 8] = [
    "ID",
    "NAME",
    "PREFIX",
    "SCOPES",
    "RESOURCES",
    "STATUS",
    "CREATED",
    "EXPIRES",
];

fn print_keys(page: &Page<ApiKey>) {
    let now = OffsetDateTime::now_utc();
    let rows: Vec<_> = page.items.iter().map(|key| key_row(key, now)).collect();

    print_table(KEY_COLUMNS, &rows);
    note_truncated(page);
}

fn key_row(key: &ApiKey, now: OffsetDateTime) -> [String; 8] {
    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
    let resources = if key.resources.is_empty() {
        "*".to_owned()
    } else {
        key.resources.join(",")
    };
    let status = if key.revoked_at.is_some() {
        "revoked"
    } else if key.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    };

    [
        key.id.clone(),
        key.name.clone(),
        key.secret_prefix.clone(),
        scopes.join(","),
        resources,
        status.to_owned(),
        show_time(key.created_at),
        or_dash(key.expires_at.map(show_time)),
    ]
}

/// Parses a scope, naming the valid ones when it is not one.
fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse().map_err(|err| {
        let valid: Vec<&str> = Scope::ALL.iter().map(|scope| scope.as_str()).collect();
        format!("{err}; valid scopes: {}", valid.join(", "))
    })
}

/// Parses a lifetime such as `90s`, `15m`, `12h`, `30d` or `2w`.
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let usage = || format!("`{text}` is not a lifetime like 90s, 15m, 12h, 30d or 2w");

    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (count, unit) = text.split_at(split);
    let count: i64 = count.parse().map_err(|_| usage())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(usage()),
    };

    if count == 0 {
        return Err("a lifetime must be longer than zero".to_owned());
    }
    let seconds = count.checked_mul(unit_seconds).ok_or_else(usage)?;
    Ok(Duration::seconds(seconds))
}

/// Parses an RFC 3339 time.
fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|err| format!("`{text}` is not an RFC 3339 time ({err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_a_count_and_a_unit() {
        assert_eq!(parse_lifetime("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_lifetime("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_lifetime("2w"), Ok(Duration::weeks(2)));
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "-1d",
            "1.5h",
            "0d",
            "99999999999999999w",
        ] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn unknown_scope_lists_the_valid_ones() {
        assert_eq!(parse_scope("storage:write"), Ok(Scope::StorageWrite));

        let err = parse_scope("storage:admin").unwrap_err();

        assert!(
            err.contains("storage:read") && err.contains("admin"),
            "{err}"
        );
    }
}
