//! The console API end to end, through the SDK and raw HTTP, on every metadata backend.

mod common;

use std::time::Duration;

use plinth_shared::backend_tests;
use plinth_shared::testkit::TestBackend;
use plinth_types::console::{
    AuditQuery, CreateKey, CreateProject, KeyWithSecret, PageQuery, Project, Quotas, RateLimit,
    TokenRequest, UpdateProject, UsageQuery,
};
use plinth_types::{ErrorBody, ErrorCode, Scope};
use serde_json::json;

use common::{Server, code_of};

async fn project(server: &Server, name: &str) -> Project {
    let request = CreateProject {
        name: name.into(),
        quotas: None,
    };
    server
        .admin
        .create_project(&request)
        .await
        .expect("create project")
}

async fn key(server: &Server, project: &Project, scopes: &[Scope]) -> KeyWithSecret {
    let request = CreateKey {
        name: "test".into(),
        scopes: scopes.to_vec(),
        ..CreateKey::default()
    };
    server
        .admin
        .create_key(&project.id, &request)
        .await
        .expect("create key")
}

async fn projects_and_keys_round_trip(backend: TestBackend) {
    let server = Server::start(backend).await;
    let alpha = project(&server, "alpha").await;
    project(&server, "beta").await;
    project(&server, "gamma").await;

    let first = server
        .admin
        .list_projects(&PageQuery {
            limit: Some(2),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = server
        .admin
        .list_projects(&PageQuery {
            limit: Some(2),
            cursor: Some(cursor),
        })
        .await
        .unwrap();
    let names: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert!(second.next_cursor.is_none());

    let renamed = server
        .admin
        .update_project(
            &alpha.id,
            &UpdateProject {
                name: Some("alpha-2".into()),
                quotas: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "alpha-2");
    assert_eq!(
        server.admin.get_project(&alpha.id).await.unwrap().name,
        "alpha-2"
    );
    let taken = UpdateProject {
        name: Some("beta".into()),
        quotas: None,
    };
    assert_eq!(
        code_of(server.admin.update_project(&alpha.id, &taken).await),
        ErrorCode::ProjectNameTaken
    );

    let created = key(&server, &alpha, &[Scope::Admin, Scope::StorageRead]).await;
    assert!(created.secret.starts_with("plinth_sk_"));
    assert!(created.secret.starts_with(&created.key.secret_prefix));
    let listed = server
        .admin
        .list_keys(&alpha.id, &PageQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let listing = serde_json::to_string(&listed).unwrap();
    assert!(
        !listing.contains(&created.secret),
        "a listing must never show the secret"
    );

    // The key manages its own project and sees nothing else.
    let as_key = server.client(&created.secret);
    assert_eq!(as_key.get_project(&alpha.id).await.unwrap().id, alpha.id);
    let own = as_key.list_projects(&PageQuery::default()).await.unwrap();
    assert_eq!(own.items.len(), 1);
    assert_eq!(
        as_key
            .list_keys(&alpha.id, &PageQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Rotation: the old secret stops, the new one works.
    let rotated = server
        .admin
        .rotate_key(&alpha.id, &created.key.id)
        .await
        .unwrap();
    assert_ne!(rotated.secret, created.secret);
    assert_eq!(
        code_of(as_key.get_project(&alpha.id).await),
        ErrorCode::InvalidCredentials
    );
    server
        .client(&rotated.secret)
        .get_project(&alpha.id)
        .await
        .unwrap();

    server.admin.delete_project(&alpha.id).await.unwrap();
    assert_eq!(
        code_of(server.admin.get_project(&alpha.id).await),
        ErrorCode::ProjectNotFound
    );
    assert_eq!(
        code_of(server.client(&rotated.secret).get_project(&alpha.id).await),
        ErrorCode::InvalidCredentials
    );
}

async fn tokens_quotas_usage_and_audit(backend: TestBackend) {
    let server = Server::start(backend).await;
    let alpha = project(&server, "alpha").await;
    let created = key(
        &server,
        &alpha,
        &[Scope::Admin, Scope::StorageRead, Scope::StorageWrite],
    )
    .await;
    let as_key = server.client(&created.secret);

    let token = as_key
        .mint_token(&TokenRequest {
            scopes: Some(vec![Scope::Admin]),
            ttl_seconds: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(token.project_id, alpha.id);
    assert_eq!(token.scopes, vec![Scope::Admin]);
    let as_token = server.client(&token.token);
    assert_eq!(as_token.get_project(&alpha.id).await.unwrap().id, alpha.id);
    let jwks = server.admin.jwks().await.unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].alg, "EdDSA");

    let quotas = Quotas {
        objects: Some(100),
        stored_bytes: Some(1 << 20),
        ..Quotas::default()
    };
    let report = server.admin.set_quotas(&alpha.id, &quotas).await.unwrap();
    assert_eq!(report.overrides, quotas);
    assert_eq!(report.limits.objects, Some(100));
    assert_eq!(report.usage["objects"], 0);
    // A tenant cannot raise its own quotas.
    assert_eq!(
        code_of(as_key.set_quotas(&alpha.id, &Quotas::default()).await),
        ErrorCode::AdminRequired
    );
    assert_eq!(
        as_key.get_quotas(&alpha.id).await.unwrap().limits.objects,
        Some(100)
    );

    let usage = as_key
        .usage(&alpha.id, &UsageQuery::default())
        .await
        .unwrap();
    let requests: u64 = usage
        .items
        .iter()
        .filter(|r| r.metric == "requests")
        .map(|r| r.value)
        .sum();
    assert!(requests >= 4, "the key's requests are counted: {usage:?}");
    let tokens: u64 = usage
        .items
        .iter()
        .filter(|r| r.metric == "tokens_minted")
        .map(|r| r.value)
        .sum();
    assert_eq!(tokens, 1);

    let audit = server
        .admin
        .audit(&AuditQuery {
            project: Some(alpha.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<_> = audit.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["quota.set", "key.create", "project.create"]);
    assert!(
        audit
            .items
            .iter()
            .all(|e| e.actor == "admin" && !e.request_id.is_empty())
    );
    // The key sees its own project's log, and only that.
    assert_eq!(
        as_key
            .audit(&AuditQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    let other = project(&server, "other").await;
    let foreign = AuditQuery {
        project: Some(other.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_key.audit(&foreign).await),
        ErrorCode::ProjectNotFound
    );

    // Rotation of the signing key keeps old tokens valid and signs new ones with the new key.
    let rotated = server.admin.rotate_signing_key().await.unwrap();
    as_token
        .get_project(&alpha.id)
        .await
        .expect("a token of the retired key still works");
    let fresh = as_key.mint_token(&TokenRequest::default()).await.unwrap();
    let header = jsonwebtoken::decode_header(&fresh.token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(rotated.kid.as_str()));
    assert_eq!(server.admin.jwks().await.unwrap().keys.len(), 2);
    let signing = server.admin.signing_keys().await.unwrap();
    assert!(signing[0].active && !signing[1].active && signing[1].retired_at.is_some());
}

async fn rate_limited_keys_get_429_with_retry_after(backend: TestBackend) {
    let server = Server::start(backend).await;
    let alpha = project(&server, "alpha").await;
    let request = CreateKey {
        name: "slow".into(),
        scopes: vec![Scope::Admin],
        rate_limit: Some(RateLimit {
            per_second: 1,
            burst: 3,
        }),
        ..CreateKey::default()
    };
    let slow = server.admin.create_key(&alpha.id, &request).await.unwrap();

    let url = format!("{}/console/v1/projects/{}", server.url, alpha.id);
    let http = server.http();
    for _ in 0..3 {
        let response = http
            .get(&url)
            .bearer_auth(&slow.secret)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = http
        .get(&url)
        .bearer_auth(&slow.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    assert_eq!(response.headers()["ratelimit-limit"], "3");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.code, "rate_limited");
    assert!(body.request_id.is_some());

    // The project's default applies to keys without their own limit, set by the operator.
    let quotas = Quotas {
        requests_per_second: Some(1),
        request_burst: Some(2),
        ..Quotas::default()
    };
    server.admin.set_quotas(&alpha.id, &quotas).await.unwrap();
    let plain = key(&server, &alpha, &[Scope::Admin]).await;
    let statuses =
        futures::future::join_all((0..4).map(|_| http.get(&url).bearer_auth(&plain.secret).send()))
            .await;
    let limited = statuses
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert_eq!(limited, 2, "a burst of 2 lets two of four through");
    // The admin token is never rate limited.
    for _ in 0..5 {
        server.admin.get_project(&alpha.id).await.unwrap();
    }
}

async fn bad_input_gets_specific_codes_and_changes_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let alpha = project(&server, "alpha").await;
    let http = server.http();
    let projects_url = format!("{}/console/v1/projects", server.url);
    let token = &server.backend.admin_token;

    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "malformed json",
            "{\"name\": ".into(),
            "application/json",
            400,
            "malformed_json",
        ),
        (
            "unknown field",
            json!({"name": "delta", "colour": 1}).to_string(),
            "application/json",
            400,
            "unknown_field",
        ),
        (
            "wrong type",
            json!({"name": 5}).to_string(),
            "application/json",
            400,
            "invalid_field",
        ),
        (
            "bad name",
            json!({"name": "Bad Name"}).to_string(),
            "application/json",
            400,
            "invalid_project_name",
        ),
        (
            "short name",
            json!({"name": "ab"}).to_string(),
            "application/json",
            400,
            "invalid_project_name",
        ),
        (
            "not json",
            json!({"name": "delta"}).to_string(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "bad quota",
            json!({"name": "delta", "quotas": {"requests_per_second": 0}}).to_string(),
            "application/json",
            400,
            "invalid_quota",
        ),
    ];
    for (what, body, content_type, status, code) in cases {
        let response = http
            .post(&projects_url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: ErrorBody = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body.code, code, "{what}: {}", body.message);
        assert!(body.request_id.is_some(), "{what}");
    }

    // An oversize body is answered as soon as its declared length exceeds the limit. The
    // request is written by hand, headers only: a client still streaming the body races the
    // server's close of the connection and may see a reset in place of the 413 (hyper does
    // not drain unread bodies), which would test the client, not the server.
    let oversize = raw_request(
        &server.url,
        &format!(
            "POST /console/v1/projects HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            2 << 20
        ),
    )
    .await;
    assert!(oversize.starts_with("HTTP/1.1 413"), "{oversize}");
    assert!(
        oversize.contains("\"code\":\"payload_too_large\""),
        "{oversize}"
    );
    assert!(oversize.contains("\"request_id\":\""), "{oversize}");

    let keys_url = format!("{}/console/v1/projects/{}/keys", server.url, alpha.id);
    let key_cases = [
        (json!({"name": "k", "scopes": []}), "invalid_scope"),
        (
            json!({"name": "k", "scopes": ["storage:admin"]}),
            "invalid_field",
        ),
        (
            json!({"name": "", "scopes": ["storage:read"]}),
            "invalid_key_name",
        ),
        (
            json!({"name": "k", "scopes": ["storage:read"], "resources": ["avatars/*"]}),
            "invalid_resource_pattern",
        ),
        (
            json!({"name": "k", "scopes": ["storage:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_expiry",
        ),
    ];
    for (body, code) in key_cases {
        let response = http
            .post(&keys_url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.json::<ErrorBody>().await.unwrap().code,
            code,
            "{body}"
        );
    }

    // Nothing of the above was stored or audited.
    let listed = server
        .admin
        .list_projects(&PageQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        server
            .admin
            .list_keys(&alpha.id, &PageQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let audit = server.admin.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(audit.items.len(), 1, "only the one project creation");

    let usage_url = format!("{}/console/v1/projects/{}/usage", server.url, alpha.id);
    for query in [
        "to=-9999-01-01",
        "from=2026-02-30",
        "from=2026-01-10&to=2026-01-01",
        "from=2020-01-01&to=2026-01-01",
    ] {
        let response = http
            .get(format!("{usage_url}?{query}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.json::<ErrorBody>().await.unwrap().code,
            "invalid_parameter",
            "{query}"
        );
    }

    let bad_query = http
        .get(format!("{projects_url}?limit=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad_query.json::<ErrorBody>().await.unwrap().code,
        "invalid_parameter"
    );
    let bad_cursor = http
        .get(format!("{projects_url}?cursor=zzz"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad_cursor.json::<ErrorBody>().await.unwrap().code,
        "invalid_cursor"
    );
}

/// Sends `request` as written and returns the whole response as text.
async fn raw_request(url: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

async fn revocation_reaches_another_replica_within_the_cache_ttl(mut backend: TestBackend) {
    backend.config.auth_cache_ttl = Duration::from_millis(500);
    let config = backend.config.clone();
    let token = backend.admin_token.clone();
    let first = Server::start(backend).await;
    let second_shared = plinth_shared::Shared::open(config, &token).await.unwrap();
    let second = Server::serve(TestBackend::sqlite(), second_shared).await;

    let alpha = project(&first, "alpha").await;
    let created = key(&first, &alpha, &[Scope::Admin]).await;
    let minted = first
        .client(&created.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();
    // Warm the other replica's caches with both credentials.
    second
        .client(&created.secret)
        .get_project(&alpha.id)
        .await
        .unwrap();
    second
        .client(&minted.token)
        .get_project(&alpha.id)
        .await
        .unwrap();

    first
        .admin
        .revoke_key(&alpha.id, &created.key.id)
        .await
        .unwrap();
    assert_eq!(
        code_of(first.client(&created.secret).get_project(&alpha.id).await),
        ErrorCode::KeyRevoked
    );
    assert_eq!(
        code_of(first.client(&minted.token).get_project(&alpha.id).await),
        ErrorCode::KeyRevoked
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let key_result = second.client(&created.secret).get_project(&alpha.id).await;
        let token_result = second.client(&minted.token).get_project(&alpha.id).await;
        if key_result.is_err() && token_result.is_err() {
            assert_eq!(code_of(key_result), ErrorCode::KeyRevoked);
            assert_eq!(code_of(token_result), ErrorCode::KeyRevoked);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still accepts the key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn signing_keys_are_sealed_with_the_master_key(mut backend: TestBackend) {
    backend.config.master_key = Some(plinth_shared::config::Secret::new(
        "correct horse battery staple",
    ));
    let server = Server::start(backend).await;
    let alpha = project(&server, "alpha").await;
    let created = key(&server, &alpha, &[Scope::Admin]).await;
    server
        .client(&created.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();

    use sqlx::Row;
    let row = sqlx::query("SELECT private_key FROM signing_keys")
        .fetch_one(server.shared.store().pool())
        .await
        .unwrap();
    let stored: String = row.try_get("private_key").unwrap();
    assert!(
        stored.starts_with("aes256gcm:"),
        "stored in the clear: {stored}"
    );

    let mut wrong = server.backend.config.clone();
    wrong.master_key = Some(plinth_shared::config::Secret::new("wrong"));
    let err = plinth_shared::Shared::open(wrong, "x").await.unwrap_err();
    assert!(err.to_string().contains("cannot be unsealed"), "{err}");
    let mut none = server.backend.config.clone();
    none.master_key = None;
    let err = plinth_shared::Shared::open(none, "x").await.unwrap_err();
    assert!(err.to_string().contains("master_key"), "{err}");
}

backend_tests!(
    projects_and_keys_round_trip,
    tokens_quotas_usage_and_audit,
    rate_limited_keys_get_429_with_retry_after,
    bad_input_gets_specific_codes_and_changes_nothing,
    revocation_reaches_another_replica_within_the_cache_ttl,
    signing_keys_are_sealed_with_the_master_key,
);
