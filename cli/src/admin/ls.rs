//! `plinth ls`: the project's buckets, or the objects of one, as a table or JSON.

use futures::TryStreamExt;

use plinth_sdk::Client;
use plinth_sdk::types::storage::{Bucket, ListObjectsQuery, ObjectListing};

use super::cp::OBJECT_SCHEME;
use super::{Output, print_table, show_time};

#[derive(Debug, clap::Args)]
pub(crate) struct LsArgs {
    /// `BUCKET` or `BUCKET/PREFIX`; without it, the project's buckets are listed.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    target: Option<String>,
    /// List every object under the prefix instead of grouping keys at each `/`.
    #[arg(long, short)]
    recursive: bool,
}

/// Runs `plinth ls`.
pub(super) async fn ls(client: &Client, output: Output, args: LsArgs) -> anyhow::Result<()> {
    let Some(target) = args.target else {
        let buckets = client.list_buckets().await?;
        return output.show(&buckets, |buckets| {
            let rows: Vec<_> = buckets.iter().map(bucket_row).collect();
            print_table(["NAME", "PUBLIC", "CREATED"], &rows);
        });
    };

    let target = target.strip_prefix(OBJECT_SCHEME).unwrap_or(&target);
    let (bucket, prefix) = target.split_once('/').unwrap_or((target, ""));
    let query = ListObjectsQuery {
        prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
        delimiter: (!args.recursive).then(|| "/".to_owned()),
        ..ListObjectsQuery::default()
    };

    let listing = if args.recursive {
        let objects = client.list_all(bucket, &query).try_collect().await?;
        ObjectListing {
            objects,
            common_prefixes: Vec::new(),
            next_cursor: None,
        }
    } else {
        grouped(client, bucket, query).await?
    };

    output.show(&listing, print_listing)
}

/// Reads every page of a delimited listing into one.
async fn grouped(
    client: &Client,
    bucket: &str,
    mut query: ListObjectsQuery,
) -> anyhow::Result<ObjectListing> {
    let mut all = client.list_objects(bucket, &query).await?;

    while let Some(cursor) = all.next_cursor.take() {
        query.cursor = Some(cursor);
        let page = client.list_objects(bucket, &query).await?;
        all.objects.extend(page.objects);
        all.common_prefixes.extend(page.common_prefixes);
        all.next_cursor = page.next_cursor;
    }

    Ok(all)
}

fn bucket_row(bucket: &Bucket) -> [String; 3] {
    let public = if bucket.public_read { "yes" } else { "no" };
    [
        bucket.name.clone(),
        public.to_owned(),
        show_time(bucket.created_at),
    ]
}

/// Prints objects and common prefixes in one table, in key order; a prefix has no size.
fn print_listing(listing: &ObjectListing) {
    let objects = listing.objects.iter().map(|object| {
        [
            object.key.clone(),
            object.size.to_string(),
            show_time(object.last_modified),
        ]
    });
    let prefixes = listing
        .common_prefixes
        .iter()
        .map(|prefix| [prefix.clone(), "-".to_owned(), "-".to_owned()]);

    let mut rows: Vec<_> = objects.chain(prefixes).collect();
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    print_table(["KEY", "SIZE", "LAST-MODIFIED"], &rows);
}
