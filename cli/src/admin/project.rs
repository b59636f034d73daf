//! `plinth project`: create, list, show and delete projects.

use plinth_sdk::Client;
use plinth_sdk::types::console::{CreateProject, Project};

use super::{Output, note_truncated, pages, print_table, quota, show_time};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProjectCommand {
    /// Create a project with the operator's default quotas.
    Create {
        /// 3 to 63 lowercase letters, digits and `-`, starting with a letter.
        name: String,
    },
    /// List projects: all of them, following the pages, or the first `--limit`.
    List {
        /// Show at most this many (1 to 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show a project.
    Get {
        /// The project's id (`prj_...`).
        #[arg(value_name = "PROJECT")]
        id: String,
    },
    /// Delete a project and everything in it: buckets, topics, indexes and keys.
    Delete {
        /// The project's id (`prj_...`).
        #[arg(value_name = "PROJECT")]
        id: String,
    },
}

pub(super) async fn run(
    client: &Client,
    output: Output,
    command: ProjectCommand,
) -> anyhow::Result<()> {
    match command {
        ProjectCommand::Create { name } => {
            let request = CreateProject { name, quotas: None };
            let project = client.create_project(&request).await?;
            output.show(&project, |project| {
                println!("Created project {} ({}).", project.id, project.name);
            })
        }
        ProjectCommand::List { limit } => {
            let page = pages(limit, async |query| client.list_projects(&query).await).await?;
            output.show(&page, |page| {
                let rows: Vec<_> = page.items.iter().map(project_row).collect();
                print_table(["ID", "NAME", "CREATED"], &rows);
                note_truncated(page);
            })
        }
        ProjectCommand::Get { id } => {
            let project = client.get_project(&id).await?;
            output.show(&project, print_project)
        }
        ProjectCommand::Delete { id } => {
            client.delete_project(&id).await?;
            output.say(format_args!("Deleted project {id}."));
            Ok(())
        }
    }
}

fn project_row(project: &Project) -> [String; 3] {
    [
        project.id.clone(),
        project.name.clone(),
        show_time(project.created_at),
    ]
}

fn print_project(project: &Project) {
    let overrides = quota::summary(&project.quotas);
    let quotas = if overrides.is_empty() {
        "operator defaults".to_owned()
    } else {
        overrides
    };

    println!("id       {}", project.id);
    println!("name     {}", project.name);
    println!("created  {}", show_time(project.created_at));
    println!("updated  {}", show_time(project.updated_at));
    println!("quotas   {quotas}");
}
