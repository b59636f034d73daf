//! Who may read and write: other projects, scopes and resource patterns, signed URLs, public buckets.

use super::common::*;

async fn other_projects_see_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, owner) = server.tenant("alpha", Quotas::default()).await;
    let (_, stranger) = server.tenant("beta", Quotas::default()).await;
    server
        .create_bucket(&owner, json!({"name": "private"}))
        .await;
    assert_eq!(
        server
            .put(&owner, "private", "secret.txt", b"s3cr3t".to_vec())
            .await
            .status(),
        200
    );

    let upload: Value = server
        .http
        .post(server.url("/buckets/private/uploads"))
        .bearer_auth(&owner)
        .json(&json!({"key": "secret.txt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = upload["upload_id"].as_str().unwrap().to_owned();

    // The stranger gets exactly what a missing bucket gives, on every route.
    for bucket in ["private", "missing"] {
        let base = server.url(&format!("/buckets/{bucket}"));
        let object = format!("{base}/objects/secret.txt");
        let requests = [
            server.http.get(&base),
            server.http.patch(&base).json(&json!({"public_read": true})),
            server.http.delete(&base),
            server.http.get(&object),
            server.http.put(&object).body("x"),
            server.http.delete(&object),
            server.http.get(format!("{base}/objects?prefix=")),
            server
                .http
                .put(&object)
                .header("x-plinth-copy-source", format!("{bucket}/secret.txt")),
            server
                .http
                .post(format!("{base}/uploads"))
                .json(&json!({"key": "secret.txt"})),
            server.http.get(format!("{base}/uploads/{upload}/parts")),
            server
                .http
                .put(format!("{base}/uploads/{upload}/parts/1"))
                .body("x"),
            server
                .http
                .post(format!("{base}/uploads/{upload}/complete"))
                .json(&json!({"parts": []})),
            server.http.delete(format!("{base}/uploads/{upload}")),
            server
                .http
                .post(format!("{base}/signed-urls"))
                .json(&json!({"key": "secret.txt", "method": "GET"})),
        ];
        for request in requests {
            let response = request.bearer_auth(&stranger).send().await.unwrap();
            assert_eq!(
                code(response).await,
                (StatusCode::NOT_FOUND, "bucket_not_found".into()),
                "{bucket}"
            );
        }
        let head = server
            .http
            .head(&object)
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND);
    }
    let listed: Value = server
        .http
        .get(server.url("/buckets"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    assert_eq!(
        server
            .get(&owner, "private", "secret.txt")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"s3cr3t"
    );
}

async fn scopes_and_patterns_limit_storage(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, writer) = server.tenant("alpha", Quotas::default()).await;
    server
        .create_bucket(&writer, json!({"name": "avatars"}))
        .await;
    let limited = CreateKey {
        name: "user-42".into(),
        scopes: vec![Scope::StorageRead, Scope::StorageWrite],
        resources: vec!["bucket:avatars/user-42/*".into()],
        ..CreateKey::default()
    };
    let limited = server
        .admin
        .create_key(&project.id, &limited)
        .await
        .unwrap()
        .secret;
    let reader = CreateKey {
        name: "ro".into(),
        scopes: vec![Scope::StorageRead],
        ..CreateKey::default()
    };
    let reader = server
        .admin
        .create_key(&project.id, &reader)
        .await
        .unwrap()
        .secret;

    assert_eq!(
        server
            .put(&limited, "avatars", "user-42/face.png", b"png".to_vec())
            .await
            .status(),
        200
    );
    assert_eq!(
        code(
            server
                .put(&limited, "avatars", "user-43/face.png", b"png".to_vec())
                .await
        )
        .await
        .1,
        "resource_not_allowed"
    );
    assert_eq!(
        code(server.put(&reader, "avatars", "x", b"png".to_vec()).await)
            .await
            .1,
        "missing_scope"
    );
    assert_eq!(
        server
            .get(&reader, "avatars", "user-42/face.png")
            .await
            .status(),
        200
    );
    let own = server.url("/buckets/avatars/objects?prefix=user-42/");
    let own = server
        .http
        .get(own)
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let everything = server.url("/buckets/avatars/objects");
    let everything = server
        .http
        .get(everything)
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(code(everything).await.1, "resource_not_allowed");
}

async fn signed_urls_work_without_credentials_and_only_as_signed(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    assert_eq!(
        server
            .put(&key, "files", "docs/report.txt", b"quarterly".to_vec())
            .await
            .status(),
        200
    );
    let sign = |body: Value| {
        let request = server
            .http
            .post(server.url("/buckets/files/signed-urls"))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["url"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let absolute = |path: &str| format!("{}{path}", server.url);

    let download = sign(json!({"key": "docs/report.txt", "method": "GET", "expires_in": 60})).await;
    let fetched = server.http.get(absolute(&download)).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
    assert_eq!(fetched.text().await.unwrap(), "quarterly");
    assert_eq!(
        server
            .http
            .head(absolute(&download))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Altered: another key in the path, a broken signature, no token, PUT with a GET URL.
    let other_key = download.replace("report.txt", "other.txt");
    let tampered = {
        let (head, signature) = download.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{head}.{flipped}{}", &signature[1..])
    };
    let no_token = download.split('?').next().unwrap().to_owned();
    for url in [other_key, tampered, no_token] {
        let response = server.http.get(absolute(&url)).send().await.unwrap();
        assert_eq!(
            code(response).await,
            (StatusCode::FORBIDDEN, "signed_url_invalid".into()),
            "{url}"
        );
    }
    let wrong_method = server
        .http
        .put(absolute(&download))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(code(wrong_method).await.1, "signed_url_invalid");

    // Expired.
    let caller = server.shared.auth().authenticate(&key).await.unwrap();
    let mut claims: plinth_types::console::TokenClaims = {
        let token = download.split("token=").nth(1).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims.project, caller.project_id().unwrap());
    claims.exp = claims.iat - 60;
    claims.nbf = claims.iat - 120;
    let expired = server.shared.auth().keyring().sign(&claims).unwrap();
    let expired_url = format!("{}?token={expired}", download.split('?').next().unwrap());
    let response = server
        .http
        .get(absolute(&expired_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(response).await,
        (StatusCode::FORBIDDEN, "signed_url_expired".into())
    );

    // An upload URL holds its content type and size.
    let upload = sign(json!({"key": "in/photo.png", "method": "PUT", "content_type": "image/png", "max_size": 10})).await;
    let put = |content_type: &'static str, body: &'static [u8]| {
        server
            .http
            .put(absolute(&upload))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        code(put("text/html", b"<b>").await.unwrap()).await.1,
        "content_type_not_allowed"
    );
    assert_eq!(
        code(put("image/png", b"0123456789abc").await.unwrap())
            .await
            .1,
        "object_too_large"
    );
    assert_eq!(put("image/png", b"png").await.unwrap().status(), 200);
    assert_eq!(
        server
            .get(&key, "files", "in/photo.png")
            .await
            .bytes()
            .await
            .unwrap()
            .as_ref(),
        b"png"
    );
    assert_eq!(server.gauges(&project).await, (2, 12));

    // Revoking the key that signed them ends its URLs.
    let keys = server
        .admin
        .list_keys(&project.id, &Default::default())
        .await
        .unwrap();
    server
        .admin
        .revoke_key(&project.id, &keys.items[0].id)
        .await
        .unwrap();
    let response = server.http.get(absolute(&download)).send().await.unwrap();
    assert_eq!(code(response).await.1, "signed_url_invalid");
}

async fn public_buckets_serve_reads_without_credentials(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (project, key) = server.tenant("alpha", Quotas::default()).await;
    let (other, other_key) = server.tenant("beta", Quotas::default()).await;
    server
        .create_bucket(&key, json!({"name": "site", "public_read": true}))
        .await;
    server.create_bucket(&key, json!({"name": "private"})).await;
    server
        .create_bucket(&other_key, json!({"name": "site"}))
        .await;
    for bucket in ["site", "private"] {
        let response = server
            .http
            .put(server.url(&format!("/buckets/{bucket}/objects/index.svg")))
            .bearer_auth(&key)
            .header("content-type", "image/svg+xml")
            .body("<svg onload=alert(1)/>")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let public = server.url(&format!("/public/{}/site/index.svg", project.id));
    let response = server.http.get(&public).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    assert_eq!(response.headers()["content-disposition"], "attachment");
    assert_eq!(
        server.http.head(&public).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        server
            .http
            .put(&public)
            .body("x")
            .send()
            .await
            .unwrap()
            .status(),
        405
    );

    // A private bucket, or another project's bucket of the same name, answers as missing.
    for url in [
        server.url(&format!("/public/{}/private/index.svg", project.id)),
        server.url(&format!("/public/{}/site/index.svg", other.id)),
        server.url("/public/prj_000000000000ffffffffffffffff/site/index.svg"),
    ] {
        let response = server.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{url}");
    }
}

plinth_shared::all_backend_tests!(
    other_projects_see_nothing,
    scopes_and_patterns_limit_storage,
    signed_urls_work_without_credentials_and_only_as_signed,
    public_buckets_serve_reads_without_credentials,
);
