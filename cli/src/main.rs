//! The `plinth` binary: `plinth serve` runs the suite (or one service); the other commands
//! administer a running server through the SDK.

mod admin;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's allocator: a request allocates and frees many small
/// buffers across threads, where glibc's arenas spent a sixth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Plinth: object storage, messaging and search for serverless functions.
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about)]
struct Cli {
    /// Server URL for admin commands (default `PLINTH_URL`, else http://127.0.0.1:8080).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Bearer credential for admin commands (default `PLINTH_TOKEN`).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every service in one process, or the one named.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Admin(command) => {
            let options = admin::AdminOptions {
                url: cli.url,
                token: cli.token,
                json: cli.json,
            };
            admin::run(command, options).await
        }
    }
}
