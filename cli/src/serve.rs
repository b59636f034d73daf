//! `plinth serve`: load the configuration, open the shared state, mount the services, serve.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use plinth_shared::config::{Config, LogFormat};
use plinth_shared::{Shared, resolve_admin_token};
use serde::Serialize;
use tracing_subscriber::EnvFilter;
use utoipa_axum::router::OpenApiRouter;

/// The services `plinth serve` can run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Service {
    /// The console API (projects, keys, tokens, quotas, usage, audit).
    Console,
    /// Object storage (buckets and objects).
    Storage,
    /// Messaging (topics and messages).
    Messaging,
    /// Search (indexes, documents and queries).
    Search,
}

/// Arguments of `plinth serve`; flags win over the environment and `plinth.toml`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Run only this service; all of them when absent.
    service: Option<Service>,
    /// Configuration file (default `./plinth.toml` when it exists).
    #[arg(long, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Metadata store URL (`sqlite://...` or `postgres://...`).
    #[arg(long)]
    database_url: Option<String>,
}

/// The flags as configuration keys; absent ones are left to the other layers.
#[derive(Debug, Serialize)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
}

/// Mounts the chosen services on `shared`: the whole product when `only` is `None`.
pub(crate) async fn services(
    shared: &Shared,
    only: Option<Service>,
) -> anyhow::Result<OpenApiRouter> {
    let wanted = |service| only.is_none() || only == Some(service);
    let mut router = OpenApiRouter::new();
    if wanted(Service::Console) {
        router = router.merge(plinth_console::router(shared.clone()));
    }
    if wanted(Service::Storage) {
        let storage = plinth_storage::Storage::open(shared.clone())
            .await
            .context("cannot open the blob store (configuration key `storage_url`)")?;
        router = router.merge(plinth_storage::router(storage));
    }
    if wanted(Service::Messaging) {
        let messaging = plinth_messaging::Messaging::open(shared.clone())
            .await
            .context("cannot open the message log (configuration key `messaging_url`)")?;
        router = router.merge(plinth_messaging::router(messaging));
    }
    if wanted(Service::Search) {
        let search = plinth_search::Search::open(shared.clone())
            .await
            .context("cannot open the index directory (configuration key `search_dir`)")?;
        router = router.merge(plinth_search::router(search));
    }
    Ok(router)
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let flags = Flags {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
    };
    let config = Config::load(args.config.as_deref(), flags)?;
    init_tracing(&config)?;
    tracing::info!(config = %serde_json::to_string(&config)?, "configuration");

    let admin = resolve_admin_token(&config)?;
    if let Some(path) = &admin.generated_at {
        // Printed once, on the start that generated it; later starts read it from the file.
        println!(
            "generated admin token (also stored in {}):\n  {}",
            path.display(),
            admin.token
        );
    }
    let listen = config.listen;
    let shared = Shared::open(config, &admin.token).await?;
    let (routes, api) = services(&shared, args.service).await?.split_for_parts();
    let app = plinth_shared::http::app(routes, api, &shared);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (configuration key `listen`)"))?;
    let address = listener.local_addr()?;
    println!("plinth listening on http://{address}");
    tracing::info!(%address, backend = shared.store().backend().as_str(), "server started");
    plinth_shared::http::serve(
        listener,
        app,
        shared,
        plinth_shared::http::shutdown_signal(),
    )
    .await?;
    tracing::info!("server stopped");
    Ok(())
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_level).with_context(|| {
        format!(
            "configuration: `log_level` {:?} is not a filter",
            config.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
