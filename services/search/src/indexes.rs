//! Index rows in the metadata store, and the index routes.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::{from_millis, new_id, now_millis};
use plinth_shared::quota::Gauge;
use plinth_shared::store::is_unique_violation;
use plinth_types::search::{CreateIndex, Index, IndexList, IndexSettings};
use plinth_types::{ErrorBody, Scope};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::Search;
use crate::engine::schema::Compiled;
use crate::names::IndexName;

/// Most synonyms and stop words an index may have.
const MAX_SETTINGS_WORDS: usize = 10_000;

/// An index row, with the id its directory is named by.
#[derive(Clone, Debug)]
pub struct IndexRow {
    /// Internal id; also the name of the index's directory.
    pub id: String,
    /// The project it belongs to.
    pub project_id: String,
    /// The public description (without stats).
    pub index: Index,
}

fn from_row(row: &AnyRow) -> Result<IndexRow, ApiError> {
    let schema: String = row.try_get("schema")?;
    let settings: String = row.try_get("settings")?;
    Ok(IndexRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        index: Index {
            name: row.try_get("name")?,
            schema: serde_json::from_str(&schema).map_err(ApiError::internal)?,
            settings: serde_json::from_str(&settings).map_err(ApiError::internal)?,
            stats: None,
            created_at: from_millis(row.try_get("created_at")?),
        },
    })
}

/// Reads an index of a project; another project's answers like a missing one.
///
/// # Errors
///
/// Returns `index_not_found`.
pub async fn get_index_row(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &IndexName,
) -> Result<IndexRow, ApiError> {
    let row = sqlx::query(
        "SELECT id, project_id, name, schema, settings, created_at FROM search_indexes \
         WHERE project_id = $1 AND name = $2",
    )
    .bind(project_id)
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::IndexNotFound(name.as_str().to_owned()))?;
    from_row(&row)
}

/// Looks an index up for a caller who must hold `scope` on it.
pub(crate) async fn authorized_index(
    search: &Search,
    caller: &Caller,
    name: &str,
    scope: Scope,
) -> Result<IndexRow, ApiError> {
    let name = IndexName::parse(name)?;
    caller.authorize(scope, &name.resource())?;
    let project_id = caller.project()?;
    let mut conn = search.shared.store().pool().acquire().await?;
    get_index_row(&mut conn, project_id, &name).await
}

fn check_settings(settings: &IndexSettings) -> Result<(), ApiError> {
    let words = settings.synonyms.values().map(Vec::len).sum::<usize>()
        + settings.synonyms.len()
        + settings.stop_words.len();
    if words > MAX_SETTINGS_WORDS {
        return Err(ApiError::InvalidField {
            field: "settings".into(),
            reason: format!("at most {MAX_SETTINGS_WORDS} synonyms and stop words"),
        });
    }
    let typos = settings.typo_tolerance;
    if typos.one_typo_from == 0 || typos.two_typos_from < typos.one_typo_from {
        return Err(ApiError::InvalidField {
            field: "settings.typo_tolerance".into(),
            reason: "one_typo_from must be at least 1 and two_typos_from at least that".into(),
        });
    }
    Ok(())
}

/// Creates an index with a schema.
#[utoipa::path(
    post,
    path = "/indexes",
    tag = "search",
    request_body = CreateIndex,
    responses(
        (status = 201, description = "Created", body = Index),
        (status = 400, description = "A bad name, schema or setting", body = ErrorBody),
        (status = 403, description = "Missing scope, or the index quota is used up", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    )
)]
pub async fn create_index(
    State(search): State<Search>,
    caller: Caller,
    Json(body): Json<CreateIndex>,
) -> Result<(StatusCode, Json<Index>), ApiError> {
    let name = IndexName::parse(&body.name)?;
    caller.authorize(Scope::SearchWrite, &name.resource())?;
    let project_id = caller.project()?;
    Compiled::new(&body.schema)?;
    check_settings(&body.settings)?;

    let id = new_id("idx");
    let now = now_millis();
    let mut tx = search.shared.store().begin().await?;
    search
        .shared
        .quotas()
        .reserve(&mut tx, project_id, Gauge::Indexes, 1)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO search_indexes (id, project_id, name, schema, settings, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(name.as_str())
    .bind(serde_json::to_string(&body.schema).map_err(ApiError::internal)?)
    .bind(serde_json::to_string(&body.settings).map_err(ApiError::internal)?)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::IndexNameTaken(name.as_str().to_owned()));
        }
        other => other?,
    };
    let row = get_index_row(&mut tx, project_id, &name).await?;
    tx.commit().await?;
    // The files are made now, so a broken data directory shows at once, not at first use.
    search.engine(&row).await?;
    tracing::info!(project_id, index = %name.as_str(), "index created");
    Ok((StatusCode::CREATED, Json(row.index)))
}

/// Lists the project's indexes.
#[utoipa::path(
    get,
    path = "/indexes",
    tag = "search",
    responses((status = 200, description = "Indexes by name", body = IndexList))
)]
pub async fn list_indexes(
    State(search): State<Search>,
    caller: Caller,
) -> Result<Json<IndexList>, ApiError> {
    caller.require_scope(Scope::SearchRead)?;
    let project_id = caller.project()?;
    let rows = sqlx::query(
        "SELECT id, project_id, name, schema, settings, created_at FROM search_indexes \
         WHERE project_id = $1 ORDER BY name",
    )
    .bind(project_id)
    .fetch_all(search.shared.store().pool())
    .await?;
    let mut indexes = Vec::with_capacity(rows.len());
    for row in &rows {
        let row = from_row(row)?;
        if caller
            .authorize(Scope::SearchRead, &format!("index:{}", row.index.name))
            .is_ok()
        {
            indexes.push(row.index);
        }
    }
    Ok(Json(IndexList { indexes }))
}

/// Reads an index: its schema, settings and what it holds.
#[utoipa::path(
    get,
    path = "/indexes/{index}",
    tag = "search",
    params(("index" = String, Path, description = "Index name")),
    responses(
        (status = 200, description = "The index", body = Index),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn get_index(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
) -> Result<Json<Index>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchRead).await?;
    let mut index = row.index.clone();
    if caller.search_filter(&index.name).is_some() {
        // A token limited to some of the documents does not learn about the rest.
        return Ok(Json(index));
    }
    let engine = search.engine(&row).await?;
    index.stats = Some(
        tokio::task::spawn_blocking(move || engine.stats())
            .await
            .map_err(ApiError::internal)?,
    );
    Ok(Json(index))
}

/// Replaces an index's settings (synonyms, stop words, typo tolerance); they apply to the
/// next query.
#[utoipa::path(
    put,
    path = "/indexes/{index}/settings",
    tag = "search",
    params(("index" = String, Path, description = "Index name")),
    request_body = IndexSettings,
    responses(
        (status = 200, description = "The index with its new settings", body = Index),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn update_settings(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
    Json(settings): Json<IndexSettings>,
) -> Result<Json<Index>, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchWrite).await?;
    check_settings(&settings)?;
    sqlx::query("UPDATE search_indexes SET settings = $1 WHERE id = $2")
        .bind(serde_json::to_string(&settings).map_err(ApiError::internal)?)
        .bind(&row.id)
        .execute(search.shared.store().pool())
        .await?;
    let mut index = row.index;
    index.settings = settings;
    tracing::info!(index = %index.name, "index settings updated");
    Ok(Json(index))
}

/// Deletes an index and every document in it.
#[utoipa::path(
    delete,
    path = "/indexes/{index}",
    tag = "search",
    params(("index" = String, Path, description = "Index name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such index", body = ErrorBody),
    )
)]
pub async fn delete_index(
    State(search): State<Search>,
    caller: Caller,
    Path(index): Path<String>,
) -> Result<StatusCode, ApiError> {
    let row = authorized_index(&search, &caller, &index, Scope::SearchWrite).await?;
    let project_id = caller.project()?;
    let mut tx = search.shared.store().begin().await?;
    // Its documents, and room reserved for writes in flight, go back with it.
    let deleted =
        sqlx::query("DELETE FROM search_indexes WHERE id = $1 RETURNING documents, pending, bytes")
            .bind(&row.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::IndexNotFound(row.index.name.clone()))?;
    let held: i64 = deleted.try_get("documents")?;
    let pending: i64 = deleted.try_get("pending")?;
    let bytes: i64 = deleted.try_get("bytes")?;
    let quotas = search.shared.quotas();
    quotas
        .release(&mut tx, project_id, Gauge::Indexes, 1)
        .await?;
    quotas
        .release(&mut tx, project_id, Gauge::Documents, held + pending)
        .await?;
    quotas
        .release(&mut tx, project_id, Gauge::IndexBytes, bytes)
        .await?;
    tx.commit().await?;
    // The row is gone, so no request reaches the files any more; a crash before they go
    // leaves them to the sweep at the next start.
    search.remove(&row.id).await?;
    tracing::info!(project_id, index = %row.index.name, "index deleted");
    Ok(StatusCode::NO_CONTENT)
}
