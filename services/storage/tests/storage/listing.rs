//! Listings: key order, prefixes, delimiters and cursors.

use super::common::*;

async fn listings_page_by_key_with_common_prefixes(backend: TestBackend) {
    let server = Server::start(backend).await;
    let (_, key) = server.tenant("alpha", Quotas::default()).await;
    server.create_bucket(&key, json!({"name": "files"})).await;
    let keys = ["a/1", "a/2", "b/1", "c", "d/x/y", "d/z", "e"];
    for object in keys {
        let response = server
            .http
            .put(server.url(&format!("/buckets/files/objects/{object}")))
            .bearer_auth(&key)
            .header("x-plinth-meta-name", object)
            .body(object.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let list = |query: &str| {
        let url = server.url(&format!("/buckets/files/objects?{query}"));
        let request = server.http.get(url).bearer_auth(&key);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let names = |page: &Value| -> Vec<String> {
        page["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let prefixes = |page: &Value| -> Vec<String> {
        page["common_prefixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };

    let all = list("").await;
    assert_eq!(names(&all), keys);
    assert_eq!(
        all["objects"][3]["metadata"]["name"], "c",
        "metadata comes with listings"
    );
    assert!(all["next_cursor"].is_null());

    let grouped = list("delimiter=/").await;
    assert_eq!(names(&grouped), ["c", "e"]);
    assert_eq!(prefixes(&grouped), ["a/", "b/", "d/"]);

    let inside = list("prefix=d/&delimiter=/").await;
    assert_eq!(
        (names(&inside), prefixes(&inside)),
        (vec!["d/z".to_owned()], vec!["d/x/".to_owned()])
    );
    assert_eq!(names(&list("prefix=a/").await), ["a/1", "a/2"]);
    assert_eq!(names(&list("start_after=c").await), ["d/x/y", "d/z", "e"]);

    // Pages of two, entries being objects and prefixes alike, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = match &cursor {
            Some(c) => format!("delimiter=/&limit=2&cursor={c}"),
            None => "delimiter=/&limit=2".to_owned(),
        };
        let page = list(&query).await;
        seen.extend(prefixes(&page));
        seen.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a/", "b/", "c", "d/", "e"]);

    let bad = server
        .http
        .get(server.url("/buckets/files/objects?limit=0"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(bad).await.1, "invalid_parameter");
    let forged = server
        .http
        .get(server.url("/buckets/files/objects?cursor=!!"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(code(forged).await.1, "invalid_cursor");
}

plinth_shared::all_backend_tests!(listings_page_by_key_with_common_prefixes,);
