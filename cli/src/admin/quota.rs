//! `plinth quota`: a project's quotas; and `plinth usage`, its daily counters.

use std::str::FromStr;

use time::Date;
use time::macros::format_description;

use plinth_sdk::Client;
use plinth_sdk::types::console::{QuotaReport, Quotas, UsageQuery, UsageReport};

use super::{Output, or_dash, print_table};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuotaCommand {
    /// Show a project's limits, its own overrides and its current usage.
    Get {
        /// The project's id (`prj_...`).
        project: String,
    },
    /// Change some of a project's overrides and keep the others.
    Set {
        /// The project's id (`prj_...`).
        project: String,
        /// `name=value` to override a quota, `name=default` to fall back to the operator's.
        #[arg(value_name = "NAME=VALUE", required = true)]
        changes: Vec<QuotaChange>,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct UsageArgs {
    /// The project's id (`prj_...`).
    project: String,
    /// First day, `YYYY-MM-DD` (UTC); by default 30 days before `--to`.
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC); by default today.
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    to: Option<String>,
    /// Only this metric, such as `requests` or `ingress_bytes`.
    #[arg(long)]
    metric: Option<String>,
}

/// One `name=value` of `quota set`: a new override, or `None` to drop it.
#[derive(Clone, Debug)]
pub(crate) struct QuotaChange {
    name: &'static str,
    value: Option<u64>,
}

impl FromStr for QuotaChange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not name=value"))?;

        let names = fields(&mut Quotas::default()).map(|(name, _)| name);
        let Some(name) = names.into_iter().find(|known| *known == name) else {
            return Err(format!(
                "unknown quota `{name}`; valid quotas: {}",
                names.join(", ")
            ));
        };
        let value = match value {
            "default" => None,
            number => Some(
                number
                    .parse()
                    .map_err(|_| format!("`{number}` is neither a whole number nor `default`"))?,
            ),
        };
        Ok(QuotaChange { name, value })
    }
}

pub(super) async fn run(
    client: &Client,
    output: Output,
    command: QuotaCommand,
) -> anyhow::Result<()> {
    let report = match command {
        QuotaCommand::Get { project } => client.get_quotas(&project).await?,
        QuotaCommand::Set { project, changes } => {
            // Read, change, write: a concurrent `quota set` on the same project can lose one
            // of the two updates. Admin changes are rare and the server has no conditional
            // PUT, so this stays simple.
            let mut overrides = client.get_quotas(&project).await?.overrides;
            for change in &changes {
                for (name, value) in fields(&mut overrides) {
                    if name == change.name {
                        *value = change.value;
                    }
                }
            }
            client.set_quotas(&project, &overrides).await?
        }
    };

    output.show(&report, print_report)
}

pub(super) async fn usage(client: &Client, output: Output, args: UsageArgs) -> anyhow::Result<()> {
    let query = UsageQuery {
        from: args.from,
        to: args.to,
        metric: args.metric,
    };

    let report = client.usage(&args.project, &query).await?;
    output.show(&report, |report: &UsageReport| {
        let rows: Vec<_> = report
            .items
            .iter()
            .map(|record| {
                [
                    record.day.clone(),
                    record.metric.clone(),
                    record.value.to_string(),
                ]
            })
            .collect();
        print_table(["DAY", "METRIC", "VALUE"], &rows);
    })
}

/// Formats a project's own overrides as `name=value, ...`; empty when it has none.
pub(super) fn summary(quotas: &Quotas) -> String {
    let mut quotas = quotas.clone();
    let set: Vec<String> = fields(&mut quotas)
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
        .collect();
    set.join(", ")
}

fn print_report(report: &QuotaReport) {
    let mut limits = report.limits.clone();
    let mut overrides = report.overrides.clone();

    let mut rows = Vec::new();
    for ((name, limit), (_, own)) in fields(&mut limits).into_iter().zip(fields(&mut overrides)) {
        let limit = limit.map_or_else(|| "unlimited".to_owned(), |limit| limit.to_string());
        let usage = or_dash(report.usage.get(name));
        rows.push([name.to_owned(), limit, or_dash(own.as_ref()), usage]);
    }
    // Gauges that no quota limits are still worth seeing.
    let names = fields(&mut Quotas::default()).map(|(name, _)| name);
    for (gauge, value) in &report.usage {
        if !names.contains(&gauge.as_str()) {
            rows.push([
                gauge.clone(),
                "-".to_owned(),
                "-".to_owned(),
                value.to_string(),
            ]);
        }
    }

    print_table(["QUOTA", "LIMIT", "OVERRIDE", "USAGE"], &rows);
}

/// Names every quota with its value, in the order of the type. The destructuring has no `..`,
/// so a quota added to the type fails to compile here until it gets its name.
fn fields(quotas: &mut Quotas) -> [(&'static str, &mut Option<u64>); 13] {
    let Quotas {
        stored_bytes,
        objects,
        object_size_max,
        topics,
        partitions_per_topic,
        message_size_max,
        messages_per_day,
        retention_seconds,
        documents,
        indexes,
        index_bytes,
        requests_per_second,
        request_burst,
    } = quotas;

    [
        ("stored_bytes", stored_bytes),
        ("objects", objects),
        ("object_size_max", object_size_max),
        ("topics", topics),
        ("partitions_per_topic", partitions_per_topic),
        ("message_size_max", message_size_max),
        ("messages_per_day", messages_per_day),
        ("retention_seconds", retention_seconds),
        ("documents", documents),
        ("indexes", indexes),
        ("index_bytes", index_bytes),
        ("requests_per_second", requests_per_second),
        ("request_burst", request_burst),
    ]
}

/// Checks that a day is `YYYY-MM-DD`, so that a typo fails before any request.
fn parse_day(text: &str) -> Result<String, String> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map(|_| text.to_owned())
        .map_err(|_| format!("`{text}` is not a day as YYYY-MM-DD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_values_and_defaults() {
        let set: QuotaChange = "objects=100".parse().unwrap();
        let reset: QuotaChange = "stored_bytes=default".parse().unwrap();

        assert_eq!((set.name, set.value), ("objects", Some(100)));
        assert_eq!((reset.name, reset.value), ("stored_bytes", None));
        assert!("objects=-1".parse::<QuotaChange>().is_err());
        assert!("objects".parse::<QuotaChange>().is_err());
    }

    #[test]
    fn unknown_quota_lists_the_valid_ones() {
        let err = "buckets=3".parse::<QuotaChange>().unwrap_err();

        assert!(err.contains("unknown quota `buckets`"), "{err}");
        assert!(
            err.contains("stored_bytes") && err.contains("request_burst"),
            "{err}"
        );
    }

    #[test]
    fn summary_names_only_the_overrides() {
        let quotas = Quotas {
            objects: Some(5),
            topics: Some(2),
            ..Quotas::default()
        };

        assert_eq!(summary(&quotas), "objects=5, topics=2");
        assert_eq!(summary(&Quotas::default()), "");
    }

    #[test]
    fn days_must_be_calendar_days() {
        assert_eq!(parse_day("2025-02-28").as_deref(), Ok("2025-02-28"));
        assert!(parse_day("2025-02-30").is_err());
        assert!(parse_day("28.02.2025").is_err());
    }
}
