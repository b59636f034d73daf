//! `plinth cp`: copies between local files, the standard streams and objects.
//!
//! An argument names an object when it reads `BUCKET/KEY` and is no local path: `-` is
//! stdin or stdout; an argument is local when it has no `/`, starts with `/`, `.` or `~`,
//! or exists on disk. `plinth://BUCKET/KEY` names an object whatever the disk holds.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use plinth_sdk::types::storage::ObjectInfo;
use plinth_sdk::{Client, Error, MultipartOptions, ObjectHead, PutOptions};

use super::Output;

/// Transfers of more bytes than this show a progress bar, when stderr is a terminal.
const PROGRESS_MIN_BYTES: u64 = 1024 * 1024;

/// Files larger than this go up as multipart uploads: parts sent side by side, each
/// retried on its own, and the whole resumable with `--resume`.
const MULTIPART_MIN_BYTES: u64 = 64 << 20;

/// The prefix that makes an argument an object even where it could be a local path.
pub(super) const OBJECT_SCHEME: &str = "plinth://";

#[derive(Debug, clap::Args)]
pub(crate) struct CpArgs {
    /// A local file, `-` for stdin, or `BUCKET/KEY`.
    source: String,
    /// A local file or directory, `-` for stdout, or `BUCKET/KEY`; a key that is empty or
    /// ends in `/` gets the source's file name appended.
    destination: String,
    /// The content type an upload is stored with (default `application/octet-stream`).
    #[arg(long)]
    content_type: Option<String>,
    /// Seconds the whole transfer may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    timeout: u64,
    /// Finish an interrupted multipart upload of the source file, sending only the parts
    /// the server lacks (the id is in the failed upload's error).
    #[arg(long, value_name = "UPLOAD_ID")]
    resume: Option<String>,
}

impl CpArgs {
    /// How long the client may wait for the transfer, instead of its usual 30 seconds.
    pub(super) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// A local file, or stdin/stdout (`None`).
    Local(Option<PathBuf>),
    /// An object; the key may be empty or a prefix ending in `/`.
    Object { bucket: String, key: String },
}

impl Location {
    fn parse(arg: &str) -> Location {
        if arg == "-" {
            return Location::Local(None);
        }
        if let Some(object) = arg.strip_prefix(OBJECT_SCHEME) {
            return Location::object(object);
        }

        let local =
            !arg.contains('/') || arg.starts_with(['/', '.', '~']) || Path::new(arg).exists();
        if local {
            Location::Local(Some(PathBuf::from(arg)))
        } else {
            Location::object(arg)
        }
    }

    fn object(text: &str) -> Location {
        let (bucket, key) = text.split_once('/').unwrap_or((text, ""));
        Location::Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }
}

/// Runs `plinth cp`.
pub(super) async fn cp(client: &Client, output: Output, args: CpArgs) -> anyhow::Result<()> {
    let options = PutOptions {
        content_type: args.content_type,
        ..PutOptions::default()
    };

    match (
        Location::parse(&args.source),
        Location::parse(&args.destination),
    ) {
        (Location::Local(source), Location::Object { bucket, key }) => {
            let name = source.as_deref().and_then(file_name);
            let key = complete_key(&key, name)?;
            let target = Target {
                bucket: &bucket,
                key: &key,
                resume: args.resume.as_deref(),
            };
            let info = upload(client, output, source, &target, &options).await?;
            output.show(&info, |info| {
                println!(
                    "Uploaded {}/{} ({} bytes).",
                    info.bucket, info.key, info.size
                );
            })
        }
        (Location::Object { bucket, key }, Location::Local(destination)) => {
            check_source(&key)?;
            download(client, output, &bucket, &key, destination).await
        }
        (
            Location::Object {
                bucket: source_bucket,
                key: source_key,
            },
            Location::Object { bucket, key },
        ) => {
            check_source(&source_key)?;
            let key = complete_key(&key, file_name(Path::new(&source_key)))?;
            let info = client
                .copy_object(&source_bucket, &source_key, &bucket, &key)
                .await?;
            output.show(&info, |info| {
                println!(
                    "Copied to {}/{} ({} bytes).",
                    info.bucket, info.key, info.size
                );
            })
        }
        (Location::Local(_), Location::Local(_)) => {
            bail!("one side of `plinth cp` must be an object, written BUCKET/KEY")
        }
    }
}

/// Where an upload goes, and the multipart upload it resumes, if any.
struct Target<'a> {
    bucket: &'a str,
    key: &'a str,
    resume: Option<&'a str>,
}

/// Uploads stdin or a file, the file with a progress bar when it is large and someone
/// watches, and in parts when it is larger still.
async fn upload(
    client: &Client,
    output: Output,
    source: Option<PathBuf>,
    target: &Target<'_>,
    options: &PutOptions,
) -> anyhow::Result<ObjectInfo> {
    let (bucket, key) = (target.bucket, target.key);
    let Some(path) = source else {
        if target.resume.is_some() {
            bail!("--resume needs the source file, not stdin");
        }
        return Ok(client
            .put_reader(bucket, key, tokio::io::stdin(), options)
            .await?);
    };

    let size = std::fs::metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MULTIPART_MIN_BYTES || target.resume.is_some() {
        return upload_in_parts(client, output, &path, size, target, options).await;
    }
    let Some(bar) = progress(output, size) else {
        return Ok(client.put_file(bucket, key, &path, options).await?);
    };

    let file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let stored = client
        .put_reader(bucket, key, bar.wrap_async_read(file), options)
        .await;
    bar.finish_and_clear();
    Ok(stored?)
}

/// Uploads a file as a multipart upload, or finishes one, with a bar counting the parts
/// sent; a failure names the upload to resume.
async fn upload_in_parts(
    client: &Client,
    output: Output,
    path: &Path,
    size: u64,
    target: &Target<'_>,
    options: &PutOptions,
) -> anyhow::Result<ObjectInfo> {
    let bar = progress(output, size);
    let mut multipart = MultipartOptions::default();
    if let Some(bar) = &bar {
        let bar = bar.clone();
        multipart.on_part_sent = Some(Arc::new(move |_, bytes| bar.inc(bytes)));
    }
    let (bucket, key) = (target.bucket, target.key);
    let stored = match target.resume {
        Some(upload_id) => {
            client
                .resume_file_upload(bucket, upload_id, path, options, &multipart)
                .await
        }
        None => {
            client
                .put_file_multipart(bucket, key, path, options, &multipart)
                .await
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    stored.map_err(|err| {
        let hint = match &err {
            Error::UploadInterrupted { upload_id, .. } => Some(format!(
                "the upload was interrupted; run the same command with `--resume {upload_id}` \
                 to send only what is missing"
            )),
            _ => None,
        };
        match hint {
            Some(hint) => anyhow::Error::new(err).context(hint),
            None => err.into(),
        }
    })
}

/// Downloads to stdout, or to a temporary file beside the destination that is renamed into
/// place once complete, so the destination never holds half an object.
async fn download(
    client: &Client,
    output: Output,
    bucket: &str,
    key: &str,
    destination: Option<PathBuf>,
) -> anyhow::Result<()> {
    let Some(mut path) = destination else {
        client
            .download(bucket, key, &mut tokio::io::stdout())
            .await?;
        return Ok(());
    };
    if path.is_dir() {
        let name = file_name(Path::new(key)).context("the key has no file name")?;
        path.push(name);
    }

    let name = file_name(&path).context("the destination has no file name")?;
    let temp = path.with_file_name(format!(".{name}.{}.part", std::process::id()));
    let written = download_to(client, output, bucket, key, &temp).await;
    let head = match written {
        Ok(head) => head,
        Err(err) => {
            // The partial file is useless; a failure to remove it hides nothing worse.
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err);
        }
    };
    tokio::fs::rename(&temp, &path)
        .await
        .with_context(|| format!("cannot move the download to {}", path.display()))?;

    output.show(&head, |head| {
        println!("Downloaded {} ({} bytes).", path.display(), head.size);
    })
}

async fn download_to(
    client: &Client,
    output: Output,
    bucket: &str,
    key: &str,
    temp: &Path,
) -> anyhow::Result<ObjectHead> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .await
        .with_context(|| format!("cannot create {}", temp.display()))?;

    // The size for the bar costs a HEAD, asked only when a bar could be seen.
    let bar = if watched(output) {
        progress(output, client.head_object(bucket, key).await?.size)
    } else {
        None
    };
    let head = match &bar {
        Some(bar) => {
            let mut writer = bar.wrap_async_write(&mut file);
            client.download(bucket, key, &mut writer).await
        }
        None => client.download(bucket, key, &mut file).await,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let head = head?;
    file.sync_all().await.context("cannot write the download")?;
    Ok(head)
}

/// Tells whether someone may be watching stderr: a terminal, and no `--json`.
fn watched(output: Output) -> bool {
    !output.json && std::io::stderr().is_terminal()
}

/// Returns a progress bar for a transfer of `size` bytes, or `None` when none should show.
fn progress(output: Output, size: u64) -> Option<ProgressBar> {
    if size <= PROGRESS_MIN_BYTES || !watched(output) {
        return None;
    }

    let template = "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    Some(ProgressBar::new(size).with_style(style))
}

/// Completes a destination key: one that is empty or ends in `/` gets the source's name.
fn complete_key(key: &str, name: Option<&str>) -> anyhow::Result<String> {
    if !key.is_empty() && !key.ends_with('/') {
        return Ok(key.to_owned());
    }
    match name {
        Some(name) => Ok(format!("{key}{name}")),
        None => bail!("name the destination key: BUCKET/KEY"),
    }
}

fn check_source(key: &str) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("name the object to copy: BUCKET/KEY");
    }
    Ok(())
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|name| name.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(bucket: &str, key: &str) -> Location {
        Location::Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }

    fn local(path: &str) -> Location {
        Location::Local(Some(PathBuf::from(path)))
    }

    #[test]
    fn arguments_are_told_apart() {
        assert_eq!(Location::parse("-"), Location::Local(None));
        assert_eq!(
            Location::parse("photos/cat.png"),
            object("photos", "cat.png")
        );
        assert_eq!(Location::parse("photos/a/b/"), object("photos", "a/b/"));
        assert_eq!(Location::parse("cat.png"), local("cat.png"));
        assert_eq!(
            Location::parse("./photos/cat.png"),
            local("./photos/cat.png")
        );
        assert_eq!(Location::parse("/tmp/cat.png"), local("/tmp/cat.png"));
        assert_eq!(Location::parse("plinth://photos"), object("photos", ""));
        assert_eq!(Location::parse("plinth://./x"), object(".", "x"));
    }

    #[test]
    fn keys_ending_in_a_slash_take_the_source_name() {
        assert_eq!(complete_key("a/", Some("f.txt")).unwrap(), "a/f.txt");
        assert_eq!(complete_key("", Some("f.txt")).unwrap(), "f.txt");
        assert_eq!(complete_key("a/b", Some("f.txt")).unwrap(), "a/b");
        assert!(complete_key("", None).is_err());
    }
}
