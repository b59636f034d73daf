//! Project routes.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, PageRequest, Path, Query, RequestId};
use plinth_shared::projects::{self, ProjectName};
use plinth_shared::{ApiError, Shared};
use plinth_types::ErrorBody;
use plinth_types::console::{CreateProject, Page, PageQuery, Project, UpdateProject};
use serde_json::json;

use crate::audit::Change;

/// Creates a project (admin token only).
#[utoipa::path(
    post,
    path = "/projects",
    tag = "projects",
    request_body = CreateProject,
    responses(
        (status = 201, description = "Created", body = Project),
        (status = 400, description = "Bad name or quotas", body = ErrorBody),
        (status = 409, description = "Name in use", body = ErrorBody),
    )
)]
pub async fn create_project(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Json(body): Json<CreateProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    caller.require_admin()?;
    let name = ProjectName::parse(&body.name)?;
    let quotas = body.quotas.unwrap_or_default();

    let mut tx = shared.store().begin().await?;
    let project = projects::create(&mut tx, &name, &quotas).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    let details = json!({ "name": project.name, "quotas": project.quotas });
    change
        .record(
            &mut tx,
            Some(&project.id),
            "project.create",
            &project.id,
            details,
        )
        .await?;
    tx.commit().await?;

    tracing::info!(project_id = %project.id, name = %project.name, "project created");
    Ok((StatusCode::CREATED, Json(project)))
}

/// Lists projects in creation order: all of them for the admin, its own for a project key.
#[utoipa::path(
    get,
    path = "/projects",
    tag = "projects",
    params(PageQuery),
    responses((status = 200, description = "One page of projects", body = Page<Project>))
)]
pub async fn list_projects(
    State(shared): State<Shared>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page<Project>>, ApiError> {
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;

    let mut conn = shared.store().pool().acquire().await?;
    let listing = match caller.project_id() {
        None => projects::list(&mut conn, page.after.as_deref(), page.limit).await?,
        Some(own) => {
            let project = projects::get(&mut conn, own).await?;
            let items = if page.after.is_none() {
                vec![project]
            } else {
                Vec::new()
            };
            Page {
                items,
                next_cursor: None,
            }
        }
    };
    Ok(Json(listing))
}

/// Reads a project.
#[utoipa::path(
    get,
    path = "/projects/{project}",
    tag = "projects",
    params(("project" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn get_project(
    State(shared): State<Shared>,
    caller: Caller,
    Path(project_id): Path<String>,
) -> Result<Json<Project>, ApiError> {
    caller.require_project(&project_id)?;

    let mut conn = shared.store().pool().acquire().await?;
    Ok(Json(projects::get(&mut conn, &project_id).await?))
}

/// Renames a project or replaces its quotas (admin token only).
#[utoipa::path(
    patch,
    path = "/projects/{project}",
    tag = "projects",
    params(("project" = String, Path, description = "Project id")),
    request_body = UpdateProject,
    responses(
        (status = 200, description = "The updated project", body = Project),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 409, description = "Name in use", body = ErrorBody),
    )
)]
pub async fn update_project(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(project_id): Path<String>,
    Json(body): Json<UpdateProject>,
) -> Result<Json<Project>, ApiError> {
    caller.require_project(&project_id)?;
    caller.require_admin()?;
    let name = body.name.as_deref().map(ProjectName::parse).transpose()?;

    let mut tx = shared.store().begin().await?;
    let project =
        projects::update(&mut tx, &project_id, name.as_ref(), body.quotas.as_ref()).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    let details = json!({ "name": body.name, "quotas": body.quotas });
    change
        .record(
            &mut tx,
            Some(&project.id),
            "project.update",
            &project.id,
            details,
        )
        .await?;
    tx.commit().await?;

    tracing::info!(project_id = %project.id, "project updated");
    Ok(Json(project))
}

/// Deletes a project and its keys (admin token only).
#[utoipa::path(
    delete,
    path = "/projects/{project}",
    tag = "projects",
    params(("project" = String, Path, description = "Project id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
pub async fn delete_project(
    State(shared): State<Shared>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(project_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_project(&project_id)?;
    caller.require_admin()?;

    let mut tx = shared.store().begin().await?;
    projects::delete(&mut tx, &project_id).await?;
    let change = Change {
        caller: &caller,
        request_id: &request_id,
    };
    change
        .record(
            &mut tx,
            Some(&project_id),
            "project.delete",
            &project_id,
            json!({}),
        )
        .await?;
    tx.commit().await?;
    shared.auth().forget_keys();

    tracing::info!(project_id = %project_id, "project deleted");
    Ok(StatusCode::NO_CONTENT)
}
