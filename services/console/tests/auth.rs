//! Every way a credential is refused, each its own test, on every metadata backend; and the
//! exact quota gauges under concurrent writers.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use plinth_shared::backend_tests;
use plinth_shared::ids::now_millis;
use plinth_shared::quota::Gauge;
use plinth_shared::testkit::TestBackend;
use plinth_types::console::{
    CreateKey, CreateProject, KeyWithSecret, Project, Quotas, TokenClaims, TokenRequest,
};
use plinth_types::{ErrorBody, ErrorCode, Scope};

use common::{Server, code_of};

struct Fixture {
    server: Server,
    project: Project,
    key: KeyWithSecret,
}

async fn fixture(backend: TestBackend, scopes: &[Scope], resources: &[&str]) -> Fixture {
    let server = Server::start(backend).await;
    let project = server
        .admin
        .create_project(&CreateProject {
            name: "alpha".into(),
            quotas: None,
        })
        .await
        .unwrap();
    let request = CreateKey {
        name: "k".into(),
        scopes: scopes.to_vec(),
        resources: resources.iter().map(|r| r.to_string()).collect(),
        ..CreateKey::default()
    };
    let key = server
        .admin
        .create_key(&project.id, &request)
        .await
        .unwrap();
    Fixture {
        server,
        project,
        key,
    }
}

impl Fixture {
    fn claims(&self) -> TokenClaims {
        let now = now_millis() / 1000;
        TokenClaims {
            iss: "plinth".into(),
            aud: "plinth".into(),
            sub: self.key.key.id.clone(),
            project: self.project.id.clone(),
            scopes: vec![Scope::Admin],
            resources: Vec::new(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "tok_test".into(),
            upload: None,
            search_filters: Default::default(),
        }
    }

    fn sign(&self, claims: &TokenClaims) -> String {
        self.server.shared.auth().keyring().sign(claims).unwrap()
    }

    /// Calls a route that needs `admin` on the fixture's project with `credential`.
    async fn refusal(&self, credential: &str) -> ErrorBody {
        let url = format!(
            "{}/console/v1/projects/{}/keys",
            self.server.url, self.project.id
        );
        let response = self
            .server
            .http()
            .get(url)
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(status, ErrorCode::parse(&body.code).unwrap().status());
        assert!(status >= 400, "{credential} was accepted");
        body
    }
}

async fn expired_token_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let mut claims = f.claims();
    claims.exp = now_millis() / 1000 - 60;
    claims.nbf = claims.exp - 60;
    assert_eq!(f.refusal(&f.sign(&claims)).await.code, "token_expired");
}

async fn not_yet_valid_token_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let mut claims = f.claims();
    claims.nbf = now_millis() / 1000 + 120;
    assert_eq!(
        f.refusal(&f.sign(&claims)).await.code,
        "token_not_yet_valid"
    );
}

async fn wrong_audience_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let mut claims = f.claims();
    claims.aud = "someone-else".into();
    let body = f.refusal(&f.sign(&claims)).await;
    assert_eq!(body.code, "invalid_token");
    assert!(body.message.contains("audience"), "{}", body.message);
}

async fn wrong_issuer_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let mut claims = f.claims();
    claims.iss = "evil".into();
    let body = f.refusal(&f.sign(&claims)).await;
    assert_eq!(body.code, "invalid_token");
    assert!(body.message.contains("issuer"), "{}", body.message);
}

async fn bad_signature_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let token = f.sign(&f.claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    raw[0] ^= 0x01;
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(raw));
    let body = f.refusal(&forged).await;
    assert_eq!(body.code, "invalid_token");
    assert!(body.message.contains("signature"), "{}", body.message);

    // Claims changed under a valid signature are just as bad.
    let mut claims = f.claims();
    claims.scopes = vec![Scope::Admin, Scope::StorageWrite];
    let parts: Vec<&str> = token.split('.').collect();
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let swapped = format!("{}.{body}.{}", parts[0], parts[2]);
    assert_eq!(f.refusal(&swapped).await.code, "invalid_token");
}

async fn alg_none_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let kid = f.server.shared.auth().keyring().active_kid().unwrap();
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&f.claims()).unwrap());
    let body = f.refusal(&format!("{header}.{claims}.")).await;
    assert_eq!(body.code, "invalid_token");
}

async fn hs256_signed_with_the_public_key_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let jwks = f.server.admin.jwks().await.unwrap();
    let public = URL_SAFE_NO_PAD.decode(&jwks.keys[0].x).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(jwks.keys[0].kid.clone());
    let forged = jsonwebtoken::encode(
        &header,
        &f.claims(),
        &EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    let body = f.refusal(&forged).await;
    assert_eq!(body.code, "invalid_token");
    assert!(body.message.contains("EdDSA"), "{}", body.message);
}

async fn unknown_kid_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let token = f.sign(&f.claims());
    let parts: Vec<&str> = token.split('.').collect();
    let header = URL_SAFE_NO_PAD
        .encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"sig_000000000000ffffffffffffffff"}"#);
    let body = f
        .refusal(&format!("{header}.{}.{}", parts[1], parts[2]))
        .await;
    assert_eq!(body.code, "invalid_token");
    assert!(
        body.message.contains("unknown signing key"),
        "{}",
        body.message
    );
}

async fn revoked_key_and_its_tokens_are_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let token = f
        .server
        .client(&f.key.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();
    f.server
        .admin
        .revoke_key(&f.project.id, &f.key.key.id)
        .await
        .unwrap();
    assert_eq!(f.refusal(&f.key.secret).await.code, "key_revoked");
    assert_eq!(f.refusal(&token.token).await.code, "key_revoked");
    let again = f
        .server
        .admin
        .revoke_key(&f.project.id, &f.key.key.id)
        .await
        .unwrap();
    assert!(again.revoked_at.is_some());
    assert_eq!(
        code_of(
            f.server
                .admin
                .rotate_key(&f.project.id, &f.key.key.id)
                .await
        ),
        ErrorCode::KeyRevoked
    );
}

async fn expired_key_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let token = f
        .server
        .client(&f.key.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
        .bind(now_millis() - 1000)
        .bind(&f.key.key.id)
        .execute(f.server.shared.store().pool())
        .await
        .unwrap();
    f.server.shared.auth().forget_keys();
    assert_eq!(f.refusal(&f.key.secret).await.code, "key_expired");
    assert_eq!(f.refusal(&token.token).await.code, "key_expired");
}

async fn unknown_and_malformed_credentials_are_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &[]).await;
    let mut typo = f.key.secret.clone();
    typo.replace_range(12..13, if &typo[12..13] == "A" { "B" } else { "A" });
    for credential in [typo.as_str(), "plinth_sk_nonsense", "not-a-token", "a.b.c"] {
        let body = f.refusal(credential).await;
        assert!(
            ["invalid_credentials", "invalid_token"].contains(&body.code.as_str()),
            "{credential}: {}",
            body.code
        );
    }
}

async fn key_of_another_project_sees_it_as_missing(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin, Scope::StorageRead], &[]).await;
    let other = f
        .server
        .admin
        .create_project(&CreateProject {
            name: "beta".into(),
            quotas: None,
        })
        .await
        .unwrap();
    let as_key = f.server.client(&f.key.secret);
    let missing = "prj_000000000000ffffffffffffffff";
    for project in [other.id.as_str(), missing] {
        assert_eq!(
            code_of(as_key.get_project(project).await),
            ErrorCode::ProjectNotFound
        );
        let keys = as_key.list_keys(project, &Default::default()).await;
        assert_eq!(code_of(keys), ErrorCode::ProjectNotFound);
        assert_eq!(
            code_of(as_key.get_quotas(project).await),
            ErrorCode::ProjectNotFound
        );
        let request = CreateKey {
            name: "x".into(),
            scopes: vec![Scope::StorageRead],
            ..Default::default()
        };
        assert_eq!(
            code_of(as_key.create_key(project, &request).await),
            ErrorCode::ProjectNotFound
        );
    }
    assert!(
        f.server
            .admin
            .list_keys(&other.id, &Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn missing_scope_is_refused(backend: TestBackend) {
    let f = fixture(backend, &[Scope::StorageRead], &[]).await;
    let body = f.refusal(&f.key.secret).await;
    assert_eq!(body.code, "missing_scope");
    assert_eq!(body.details.unwrap()["scope"], "admin");
    // Operator-only routes answer admin_required to project credentials.
    let admin_key = fixture(TestBackend::sqlite(), &[Scope::Admin], &[]).await;
    let as_key = admin_key.server.client(&admin_key.key.secret);
    let create = CreateProject {
        name: "mine".into(),
        quotas: None,
    };
    assert_eq!(
        code_of(as_key.create_project(&create).await),
        ErrorCode::AdminRequired
    );
    assert_eq!(
        code_of(as_key.rotate_signing_key().await),
        ErrorCode::AdminRequired
    );
    assert_eq!(
        code_of(as_key.delete_project(&admin_key.project.id).await),
        ErrorCode::AdminRequired
    );
}

async fn resource_outside_the_patterns_is_refused(backend: TestBackend) {
    let f = fixture(
        backend,
        &[Scope::StorageRead],
        &["bucket:avatars/user-42/*"],
    )
    .await;
    let auth = f.server.shared.auth();
    let caller = auth.authenticate(&f.key.secret).await.unwrap();
    caller
        .authorize(Scope::StorageRead, "bucket:avatars/user-42/face.png")
        .unwrap();
    let refused = caller
        .authorize(Scope::StorageRead, "bucket:avatars/user-43/face.png")
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::ResourceNotAllowed);
    let refused = caller
        .authorize(Scope::StorageWrite, "bucket:avatars/user-42/face.png")
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::MissingScope);

    // The same limits hold for a token minted from the key.
    let token = f
        .server
        .client(&f.key.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();
    assert_eq!(token.resources, ["bucket:avatars/user-42/*"]);
    let caller = auth.authenticate(&token.token).await.unwrap();
    assert_eq!(
        caller
            .authorize(Scope::StorageRead, "bucket:other/x")
            .unwrap_err()
            .code(),
        ErrorCode::ResourceNotAllowed
    );
}

async fn down_scoping_cannot_widen(backend: TestBackend) {
    let f = fixture(
        backend,
        &[Scope::StorageRead, Scope::StorageWrite],
        &["bucket:avatars/*"],
    )
    .await;
    let as_key = f.server.client(&f.key.secret);
    let parent = as_key
        .mint_token(&TokenRequest {
            scopes: Some(vec![Scope::StorageWrite]),
            ttl_seconds: Some(600),
            ..Default::default()
        })
        .await
        .unwrap();
    let as_parent = f.server.client(&parent.token);

    // A narrower child is fine: an upload token for one user's folder, for ten minutes or less.
    let child = as_parent
        .mint_token(&TokenRequest {
            resources: Some(vec!["bucket:avatars/user-42/*".into()]),
            ttl_seconds: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(child.scopes, [Scope::StorageWrite]);
    assert!(child.expires_at <= parent.expires_at);

    let wider_scope = TokenRequest {
        scopes: Some(vec![Scope::StorageRead]),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_parent.mint_token(&wider_scope).await),
        ErrorCode::ScopeEscalation
    );
    let admin_scope = TokenRequest {
        scopes: Some(vec![Scope::Admin]),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_key.mint_token(&admin_scope).await),
        ErrorCode::ScopeEscalation
    );
    let wider_resource = TokenRequest {
        resources: Some(vec!["bucket:*".into()]),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_parent.mint_token(&wider_resource).await),
        ErrorCode::ScopeEscalation
    );
    let all_resources = TokenRequest {
        resources: Some(Vec::new()),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_parent.mint_token(&all_resources).await),
        ErrorCode::ScopeEscalation
    );
    let longer = TokenRequest {
        ttl_seconds: Some(3600),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_parent.mint_token(&longer).await),
        ErrorCode::ScopeEscalation
    );
    let too_long = TokenRequest {
        ttl_seconds: Some(10 * 24 * 3600),
        ..Default::default()
    };
    assert_eq!(
        code_of(as_key.mint_token(&too_long).await),
        ErrorCode::InvalidExpiry
    );

    // A project admin cannot hand out a key wider than its own credential either.
    let mut server_admin_key = CreateKey {
        name: "k".into(),
        scopes: vec![Scope::Admin],
        ..Default::default()
    };
    let admin_key = f
        .server
        .admin
        .create_key(&f.project.id, &server_admin_key)
        .await
        .unwrap();
    server_admin_key.scopes = vec![Scope::SearchWrite];
    let scoped = f.server.client(&admin_key.secret);
    assert_eq!(
        code_of(scoped.create_key(&f.project.id, &server_admin_key).await),
        ErrorCode::ScopeEscalation
    );
}

async fn concurrent_reservations_never_exceed_the_quota(backend: TestBackend) {
    let server = Server::start(backend).await;
    let quotas = Quotas {
        objects: Some(10),
        ..Quotas::default()
    };
    let project = server
        .admin
        .create_project(&CreateProject {
            name: "alpha".into(),
            quotas: Some(quotas),
        })
        .await
        .unwrap();
    let shared = server.shared.clone();

    let reserve = |shared: plinth_shared::Shared, project_id: String, delta: i64| async move {
        let mut tx = shared.store().begin().await.unwrap();
        let result = shared
            .quotas()
            .reserve(&mut tx, &project_id, Gauge::Objects, delta)
            .await;
        match result {
            Ok(()) => {
                tx.commit().await.unwrap();
                true
            }
            Err(err) => {
                assert_eq!(err.code(), ErrorCode::QuotaExceeded);
                tx.rollback().await.unwrap();
                false
            }
        }
    };
    let tasks: Vec<_> = (0..64)
        .map(|_| tokio::spawn(reserve(shared.clone(), project.id.clone(), 1)))
        .collect();
    let granted = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(granted, 10, "exactly the limit is granted");
    let gauges = server.admin.get_quotas(&project.id).await.unwrap().usage;
    assert_eq!(gauges["objects"], 10);

    // Released capacity can be reserved again, and only that much.
    for _ in 0..4 {
        assert!(reserve(shared.clone(), project.id.clone(), -1).await);
    }
    assert_eq!(
        server.admin.get_quotas(&project.id).await.unwrap().usage["objects"],
        6
    );
    let tasks: Vec<_> = (0..64)
        .map(|_| tokio::spawn(reserve(shared.clone(), project.id.clone(), 1)))
        .collect();
    let granted = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(granted, 4);
    assert_eq!(
        server.admin.get_quotas(&project.id).await.unwrap().usage["objects"],
        10
    );

    // Releasing more than is held stops at zero: a double release cannot make room beyond
    // the limit.
    let mut tx = shared.store().begin().await.unwrap();
    shared
        .quotas()
        .release(&mut tx, &project.id, Gauge::Objects, 25)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        server.admin.get_quotas(&project.id).await.unwrap().usage["objects"],
        0
    );
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(reserve(shared.clone(), project.id.clone(), 1)))
        .collect();
    let granted = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(granted, 10);
    let mut tx = shared.store().begin().await.unwrap();
    let huge = shared
        .quotas()
        .reserve(&mut tx, &project.id, Gauge::StoredBytes, i64::MAX)
        .await;
    assert_eq!(huge.unwrap_err().code(), ErrorCode::InvalidParameter);
    tx.rollback().await.unwrap();

    // A reservation rolled back with its write leaves nothing behind.
    let mut tx = shared.store().begin().await.unwrap();
    shared
        .quotas()
        .reserve(&mut tx, &project.id, Gauge::StoredBytes, 500)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        server.admin.get_quotas(&project.id).await.unwrap().usage["stored_bytes"],
        0
    );
}

async fn project_admins_cannot_hand_out_more_than_they_hold(backend: TestBackend) {
    let f = fixture(backend, &[Scope::Admin], &["bucket:x/*"]).await;
    let wide = CreateKey {
        name: "wide".into(),
        scopes: vec![Scope::StorageWrite],
        ..CreateKey::default()
    };
    let wide = f
        .server
        .admin
        .create_key(&f.project.id, &wide)
        .await
        .unwrap();
    let narrow_admin = f.server.client(&f.key.secret);

    // Rotating a wider key would hand its new secret to the narrower credential.
    let rotated = narrow_admin.rotate_key(&f.project.id, &wide.key.id).await;
    assert_eq!(code_of(rotated), ErrorCode::ScopeEscalation);
    f.server
        .client(&wide.secret)
        .mint_token(&TokenRequest::default())
        .await
        .unwrap();

    // A short-lived credential cannot create a key that outlives it.
    let ten_minutes = TokenRequest {
        ttl_seconds: Some(600),
        ..Default::default()
    };
    let token = narrow_admin.mint_token(&ten_minutes).await.unwrap();
    let as_token = f.server.client(&token.token);
    let forever = CreateKey {
        name: "forever".into(),
        scopes: vec![Scope::Admin],
        resources: vec!["bucket:x/y/*".into()],
        ..CreateKey::default()
    };
    assert_eq!(
        code_of(as_token.create_key(&f.project.id, &forever).await),
        ErrorCode::ScopeEscalation
    );
    let brief = CreateKey {
        expires_at: Some(token.expires_at - time::Duration::minutes(1)),
        ..forever
    };
    let created = as_token.create_key(&f.project.id, &brief).await.unwrap();
    assert_eq!(created.key.resources, ["bucket:x/y/*"]);
}

backend_tests!(
    project_admins_cannot_hand_out_more_than_they_hold,
    expired_token_is_refused,
    not_yet_valid_token_is_refused,
    wrong_audience_is_refused,
    wrong_issuer_is_refused,
    bad_signature_is_refused,
    alg_none_is_refused,
    hs256_signed_with_the_public_key_is_refused,
    unknown_kid_is_refused,
    revoked_key_and_its_tokens_are_refused,
    expired_key_is_refused,
    unknown_and_malformed_credentials_are_refused,
    key_of_another_project_sees_it_as_missing,
    missing_scope_is_refused,
    resource_outside_the_patterns_is_refused,
    down_scoping_cannot_widen,
    concurrent_reservations_never_exceed_the_quota,
);
