//! What comes back beside the hits and in what order: sorting by fields, cursors, facet
//! counts, highlighted snippets, and synonyms.

use crate::common::*;

/// Runs a search that must succeed.
async fn search(server: &Server, key: &str, body: Value) -> Value {
    server
        .ok(key, Method::POST, "/indexes/products/search", Some(body))
        .await
}

/// Runs a search that must be refused; returns the code and the body.
async fn refused(server: &Server, key: &str, body: Value) -> (String, Value) {
    let (status, code, body) = server
        .refused(key, Method::POST, "/indexes/products/search", Some(body))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    (code, body)
}

fn ids(page: &Value) -> Vec<String> {
    page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Thirty widgets: prices repeat every seven, every tenth has none.
fn widgets() -> Vec<Value> {
    (0..30)
        .map(|n| {
            let mut doc = json!({
                "id": format!("{n:02}"), "title": "widget", "stock": n,
                "added": format!("2026-11-{:02}T08:00:00Z", 30 - n)
            });
            if n % 10 != 0 {
                doc["price"] = json!((n % 7) as f64 + 0.5);
            }
            doc
        })
        .collect()
}

/// The widgets' ids in the order of `key` (ascending or descending price, missing last,
/// ties by id).
fn by_price(descending: bool) -> Vec<String> {
    let mut docs: Vec<(Option<f64>, String)> = widgets()
        .iter()
        .map(|d| (d["price"].as_f64(), d["id"].as_str().unwrap().to_owned()))
        .collect();
    docs.sort_by(|(pa, ia), (pb, ib)| {
        let by_price = match (pa, pb) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) if descending => b.total_cmp(a),
            (Some(a), Some(b)) => a.total_cmp(b),
        };
        by_price.then_with(|| ia.cmp(ib))
    });
    docs.into_iter().map(|(_, id)| id).collect()
}

async fn hits_sort_by_fields_and_pages_follow_cursors(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, json!(widgets())).await;

    for descending in [false, true] {
        let order = if descending { "price:desc" } else { "price" };
        let page = search(&server, &key, json!({"sort": [order], "limit": 30})).await;
        assert_eq!(ids(&page), by_price(descending), "{order}");
        assert!(page.get("next").is_none(), "one page holds them all");
    }
    // A second key orders the ties of the first.
    let page = search(
        &server,
        &key,
        json!({"sort": ["price:asc", "stock:desc"], "limit": 5}),
    )
    .await;
    assert_eq!(ids(&page), ["28", "21", "14", "07", "29"]);
    let page = search(&server, &key, json!({"sort": ["added:desc"], "limit": 3})).await;
    assert_eq!(ids(&page), ["00", "01", "02"]);

    // Following the cursors walks the whole order once, with or without a sort.
    for sort in [json!(["price"]), json!([])] {
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut body = json!({"q": "widget", "sort": sort, "limit": 7});
            if let Some(cursor) = &after {
                body["after"] = json!(cursor);
            }
            let page = search(&server, &key, body).await;
            assert_eq!(page["total"], 30, "the total counts every match");
            walked.extend(ids(&page));
            pages += 1;
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 5, "{sort}: 7 + 7 + 7 + 7 + 2");
        if sort == json!(["price"]) {
            assert_eq!(walked, by_price(false));
        } else {
            // Equal scores fall back to the id.
            let mut all: Vec<String> = (0..30).map(|n| format!("{n:02}")).collect();
            all.sort();
            assert_eq!(walked, all);
        }
    }

    // A cursor is a position, not an offset: a document added before it does not shift
    // the next page.
    let first = search(&server, &key, json!({"sort": ["price"], "limit": 10})).await;
    let cursor = first["next"].as_str().unwrap().to_owned();
    server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/documents?wait=true",
            Some(json!([{"id": "cheap", "title": "widget", "price": 0.1}])),
        )
        .await;
    let second = search(
        &server,
        &key,
        json!({"sort": ["price"], "limit": 10, "after": cursor}),
    )
    .await;
    assert_eq!(ids(&second), by_price(false)[10..20]);

    let bad_sorts = [
        json!(["title"]),
        json!(["colour"]),
        json!(["price:up"]),
        json!(["price", "price:desc"]),
    ];
    for sort in bad_sorts {
        let (code, body) = refused(&server, &key, json!({"sort": sort})).await;
        assert_eq!(code, "invalid_filter", "{body}");
        assert_eq!(body["details"]["parameter"], "sort", "{body}");
    }
    let (code, _) = refused(&server, &key, json!({"after": "not-a-cursor"})).await;
    assert_eq!(code, "invalid_cursor");
    let (code, _) = refused(
        &server,
        &key,
        json!({"sort": ["price:desc"], "after": cursor}),
    )
    .await;
    assert_eq!(
        code, "invalid_cursor",
        "a cursor holds only for its own sort"
    );
}

async fn facets_count_values_over_all_matches(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(
        &server,
        &key,
        json!([
            {"id": "1", "title": "red lamp", "tags": ["home", "light", "home"], "stock": 1, "listed": true},
            {"id": "2", "title": "blue lamp", "tags": ["home"], "stock": 1, "listed": false},
            {"id": "3", "title": "red chair", "tags": ["home", "seat"], "stock": 2, "listed": true},
            {"id": "4", "title": "red car", "tags": ["road"], "stock": 3},
            {"id": "5", "title": "green lamp", "stock": 5, "listed": true}
        ]),
    )
    .await;
    let page = search(
        &server,
        &key,
        json!({"q": "lamp", "facets": ["tags", "listed", "stock"], "limit": 1}),
    )
    .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["hits"].as_array().unwrap().len(), 1);
    // Counted over all three lamps, not the page; a value twice in one document counts once.
    assert_eq!(
        page["facets"]["tags"],
        json!([{"value": "home", "count": 2}, {"value": "light", "count": 1}])
    );
    assert_eq!(
        page["facets"]["listed"],
        json!([{"value": true, "count": 2}, {"value": false, "count": 1}])
    );
    assert_eq!(
        page["facets"]["stock"],
        json!([{"value": 1, "count": 2}, {"value": 5, "count": 1}])
    );
    // A filter narrows the counts; the limit keeps the most frequent, ties by value.
    let page = search(
        &server,
        &key,
        json!({
            "q": "red", "facets": ["tags"], "facet_limit": 2,
            "filter": {"field": "stock", "lte": 2}
        }),
    )
    .await;
    assert_eq!(
        page["facets"]["tags"],
        json!([{"value": "home", "count": 2}, {"value": "light", "count": 1}])
    );
    assert!(
        search(&server, &key, json!({"q": "red"}))
            .await
            .get("facets")
            .is_none(),
        "no facets unless asked"
    );

    for facets in [json!(["title"]), json!(["price"]), json!(["colour"])] {
        let (code, body) = refused(&server, &key, json!({"facets": facets})).await;
        assert_eq!(code, "invalid_filter", "{body}");
        assert_eq!(body["details"]["parameter"], "facets", "{body}");
    }
    let (code, _) = refused(&server, &key, json!({"facets": ["tags"], "facet_limit": 0})).await;
    assert_eq!(code, "invalid_field");
}

async fn highlights_mark_the_words_that_matched(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let long = format!(
        "{} the needle is here {}",
        "hay and straw ".repeat(30),
        "more hay ".repeat(30)
    );
    with_products(
        &server,
        &key,
        json!([
            {"id": "1", "title": "Running shoes", "body": "The quick brown fox <b>jumps</b> over the lazy dog"},
            {"id": "2", "title": "A haystack", "body": long},
            {"id": "3", "title": "中文", "body_zh": "我爱北京天安门"}
        ]),
    )
    .await;
    let highlights = |body: Value| {
        let server = &server;
        let key = &key;
        async move {
            let page = search(server, key, body).await;
            page["hits"][0]["highlights"].clone()
        }
    };
    // Words, a typo, and the last word as a prefix; the rest of the text escaped.
    let marked = highlights(json!({"q": "quikc jump", "highlight": ["body", "title"]})).await;
    assert_eq!(
        marked["body"],
        "The <mark>quick</mark> brown fox &lt;b&gt;<mark>jumps</mark>&lt;/b&gt; over the lazy dog"
    );
    // A field without a match comes back whole and unmarked.
    assert_eq!(marked["title"], "Running shoes");
    // Stemmed words are marked; excluded ones are not (here excluded from the title only,
    // so the body holding it still matches).
    let marked = highlights(json!({"q": "running", "highlight": ["title"]})).await;
    assert_eq!(marked["title"], "<mark>Running</mark> shoes");
    let marked = highlights(json!({"q": "fox -title:lazy", "highlight": ["body"]})).await;
    let body = marked["body"].as_str().unwrap();
    assert!(
        body.contains("<mark>fox</mark>") && !body.contains("<mark>lazy"),
        "{body}"
    );
    // Long text is cut around the match.
    let marked =
        highlights(json!({"q": "needle", "highlight": ["body"], "snippet_chars": 40})).await;
    let snippet = marked["body"].as_str().unwrap();
    assert!(snippet.contains("<mark>needle</mark>"), "{snippet}");
    assert!(
        snippet.starts_with('…') && snippet.ends_with('…'),
        "{snippet}"
    );
    assert!(snippet.chars().count() < 70, "{snippet}");
    // Chinese text is marked by its words.
    let marked = highlights(json!({"q": "body_zh:北京", "highlight": ["body_zh"]})).await;
    assert_eq!(marked["body_zh"], "我爱<mark>北京</mark>天安门");
    // Hits carry no highlights unless asked.
    let page = search(&server, &key, json!({"q": "fox"})).await;
    assert!(page["hits"][0].get("highlights").is_none());

    for highlight in [json!(["price"]), json!(["colour"]), json!(["tags"])] {
        let (code, body) =
            refused(&server, &key, json!({"q": "fox", "highlight": highlight})).await;
        assert_eq!(code, "invalid_filter", "{body}");
        assert_eq!(body["details"]["parameter"], "highlight", "{body}");
    }
    let (code, _) = refused(
        &server,
        &key,
        json!({"q": "fox", "highlight": ["body"], "snippet_chars": 5}),
    )
    .await;
    assert_eq!(code, "invalid_field");
}

async fn synonyms_find_the_words_they_stand_for(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(
        &server,
        &key,
        json!([
            {"id": "1", "title": "a television set"},
            {"id": "2", "title": "tv stand"},
            {"id": "3", "title": "guide to the big apple"},
            {"id": "4", "title": "new york pizza"},
            {"id": "5", "title": "apple pie"}
        ]),
    )
    .await;
    let found = |q: &str| {
        let server = &server;
        let key = &key;
        let body = json!({"q": q, "prefix": false});
        async move { ids(&search(server, key, body).await) }
    };
    assert_eq!(found("tv").await, ["2"]);
    server
        .ok(
            &key,
            Method::PUT,
            "/indexes/products/settings",
            Some(json!({"synonyms": {"tv": ["television"], "NYC": ["new york", "big apple"]}})),
        )
        .await;
    // The word written ranks above its synonym.
    assert_eq!(found("tv").await, ["2", "1"]);
    // Synonyms go one way, as declared.
    assert_eq!(found("television").await, ["1"]);
    // A synonym of several words is a phrase: "apple pie" is not "big apple".
    let mut nyc = found("nyc").await;
    nyc.sort();
    assert_eq!(nyc, ["3", "4"]);
    let page = search(&server, &key, json!({"q": "tv", "highlight": ["title"]})).await;
    let marked: Vec<&str> = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["highlights"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        marked,
        ["<mark>tv</mark> stand", "a <mark>television</mark> set"]
    );
}

plinth_shared::backend_tests!(
    hits_sort_by_fields_and_pages_follow_cursors,
    facets_count_values_over_all_matches,
    highlights_mark_the_words_that_matched,
    synonyms_find_the_words_they_stand_for,
);
