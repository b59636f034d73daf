//! Projects, the tenants: names, rows and the queries on them.

use plinth_types::console::{Page, Project, Quotas};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::ApiError;
use crate::ids::{from_millis, new_id, now_millis};
use crate::quota;
use crate::store::is_unique_violation;

/// A valid project name: 3 to 63 characters of lowercase ASCII letters, digits and `-`,
/// starting with a letter and not ending with `-`, so it can appear in hostnames, resource
/// names and Kafka topic names unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    /// Parses a project name.
    ///
    /// # Errors
    ///
    /// Returns `invalid_project_name` saying which rule the name breaks.
    pub fn parse(name: &str) -> Result<ProjectName, ApiError> {
        let invalid = |why: &str| ApiError::InvalidProjectName(format!("project name: {why}"));
        if !(3..=63).contains(&name.len()) {
            return Err(invalid("must be 3 to 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "only lowercase letters, digits and `-` are allowed",
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid("must start with a letter"));
        }
        if name.ends_with('-') {
            return Err(invalid("must not end with `-`"));
        }
        Ok(ProjectName(name.to_owned()))
    }

    /// Returns the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn project_from_row(row: &AnyRow) -> Result<Project, ApiError> {
    let quotas: String = row.try_get("quotas")?;
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        quotas: serde_json::from_str(&quotas).map_err(ApiError::internal)?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

/// Creates a project.
///
/// # Errors
///
/// Returns `project_name_taken` when the name is in use, `invalid_quota` for bad quotas.
pub async fn create(
    conn: &mut AnyConnection,
    name: &ProjectName,
    quotas: &Quotas,
) -> Result<Project, ApiError> {
    quota::validate(quotas)?;
    let id = new_id("prj");
    let now = now_millis();
    let quotas_json = serde_json::to_string(quotas).map_err(ApiError::internal)?;
    let inserted = sqlx::query(
        "INSERT INTO projects (id, name, quotas, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&id)
    .bind(name.as_str())
    .bind(&quotas_json)
    .bind(now)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => get(conn, &id).await,
        Err(err) if is_unique_violation(&err) => {
            Err(ApiError::ProjectNameTaken(name.as_str().to_owned()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Reads one project.
///
/// # Errors
///
/// Returns `project_not_found` when there is none with this id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Project, ApiError> {
    let row =
        sqlx::query("SELECT id, name, quotas, created_at, updated_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| ApiError::ProjectNotFound(id.to_owned()))?;
    project_from_row(&row)
}

/// Lists projects in creation order, `limit` at a time after the id `after`.
///
/// # Errors
///
/// Returns the store's failure.
pub async fn list(
    conn: &mut AnyConnection,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Project>, ApiError> {
    let rows = sqlx::query(
        "SELECT id, name, quotas, created_at, updated_at FROM projects WHERE id > $1 \
         ORDER BY id LIMIT $2",
    )
    .bind(after.unwrap_or(""))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *conn)
    .await?;
    crate::extract::page_from_rows(&rows, limit, project_from_row, |p| p.id.clone())
}

/// Renames a project and/or replaces its quotas.
///
/// # Errors
///
/// Returns `project_not_found`, `project_name_taken` or `invalid_quota`.
pub async fn update(
    conn: &mut AnyConnection,
    id: &str,
    name: Option<&ProjectName>,
    quotas: Option<&Quotas>,
) -> Result<Project, ApiError> {
    let current = get(conn, id).await?;
    if let Some(quotas) = quotas {
        quota::validate(quotas)?;
    }
    let name = name
        .map_or(current.name.as_str(), ProjectName::as_str)
        .to_owned();
    let quotas = quotas.unwrap_or(&current.quotas);
    let quotas_json = serde_json::to_string(quotas).map_err(ApiError::internal)?;
    let updated =
        sqlx::query("UPDATE projects SET name = $1, quotas = $2, updated_at = $3 WHERE id = $4")
            .bind(&name)
            .bind(&quotas_json)
            .bind(now_millis())
            .bind(id)
            .execute(&mut *conn)
            .await;
    match updated {
        Ok(_) => get(conn, id).await,
        Err(err) if is_unique_violation(&err) => Err(ApiError::ProjectNameTaken(name)),
        Err(err) => Err(err.into()),
    }
}

/// Deletes a project with its keys and gauges. Usage rows stay: operators bill from them.
///
/// # Errors
///
/// Returns `project_not_found` when there is none with this id.
pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<(), ApiError> {
    // Deleted explicitly as well as by cascade: SQLite enforces foreign keys only on
    // connections that enabled them.
    sqlx::query("DELETE FROM api_keys WHERE project_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM quota_gauges WHERE project_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let deleted = sqlx::query("DELETE FROM projects WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::ProjectNotFound(id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in ["abc", "my-project-1", &"a".repeat(63)] {
            assert!(ProjectName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Abc",
            "1abc",
            "abc-",
            "a_b",
            "a b",
            "ünï",
            &"a".repeat(64),
            "",
        ] {
            assert!(ProjectName::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsed_names_are_safe_everywhere(name in "\\PC{0,70}") {
            if let Ok(parsed) = ProjectName::parse(&name) {
                prop_assert!(parsed.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
                prop_assert!((3..=63).contains(&parsed.as_str().len()));
            }
        }
    }
}
