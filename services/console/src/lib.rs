//! The console API: Plinth's control plane under `/console/v1`.
//!
//! The operator (admin token) manages every project; a project's key with the `admin` scope
//! manages its own project's keys and reads its quotas, usage and audit log. Quotas, rate
//! limits, signing keys and project deletion stay with the operator: a tenant must not be
//! able to raise its own limits.
//!
//! - [`projects`]: create, list, get, update, delete.
//! - [`keys`]: API keys of a project: create, list, get, update, revoke, rotate.
//! - [`tokens`]: access tokens, signing keys and the JWKS document.
//! - [`quotas`]: quota values and readings, and daily usage.
//! - [`audit`]: the audit log, and the helper every change records itself with.

pub mod audit;
pub mod keys;
pub mod projects;
pub mod quotas;
pub mod tokens;

use plinth_shared::Shared;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The console's OpenAPI description; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "Plinth", description = "Object storage, messaging and search behind one auth layer"),
    tags(
        (name = "projects", description = "Tenants"),
        (name = "keys", description = "API keys of a project"),
        (name = "tokens", description = "Short-lived access tokens and their signing keys"),
        (name = "quotas", description = "Limits, gauges and usage"),
        (name = "audit", description = "Every admin change"),
    )
)]
struct ConsoleDoc;

/// Builds the console's routes (and their OpenAPI paths) on `shared`.
pub fn router(shared: Shared) -> OpenApiRouter {
    let v1 = OpenApiRouter::new()
        .routes(routes!(projects::create_project, projects::list_projects))
        .routes(routes!(
            projects::get_project,
            projects::update_project,
            projects::delete_project
        ))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::get_key, keys::update_key, keys::revoke_key))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(quotas::get_quotas, quotas::set_quotas))
        .routes(routes!(quotas::get_usage))
        .routes(routes!(audit::list_audit))
        .routes(routes!(tokens::mint_token))
        .routes(routes!(tokens::list_signing_keys))
        .routes(routes!(tokens::rotate_signing_key));
    OpenApiRouter::with_openapi(ConsoleDoc::openapi())
        .nest("/console/v1", v1)
        .routes(routes!(tokens::jwks))
        .with_state(shared)
}
