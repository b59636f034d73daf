//! Queries: relevance basics, typo tolerance, prefixes, phrases, signs, fields and boosts,
//! stemming, Chinese text, stop words, pagination, and malformed queries.

use crate::common::*;

fn catalogue() -> Value {
    json!([
        {"id": "1", "title": "Search engines explained", "body": "how an inverted index finds words quickly"},
        {"id": "2", "title": "Rust for services", "body": "the quick brown fox writes a search service"},
        {"id": "3", "title": "Running shoes", "body": "light shoes for a brown trail", "tags": ["sport"]},
        {"id": "4", "title": "A lamp", "body": "brown quick lamp", "body_zh": "我爱北京天安门"},
        {"id": "5", "title": "Cooking", "body": "the fox runs from the kitchen", "body_zh": "东京塔很高"}
    ])
}

async fn sorted(server: &Server, key: &str, query: &str) -> Vec<Value> {
    let (mut ids, total) = server.ids(key, "products", json!({"q": query})).await;
    assert_eq!(ids.len() as u64, total, "{query}: one page holds them all");
    ids.sort_by_key(|id| id.as_str().unwrap().to_owned());
    ids
}

async fn words_typos_prefixes_and_phrases_match(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, catalogue()).await;
    let ids = |list: &[&str]| list.iter().map(|s| json!(s)).collect::<Vec<_>>();

    // Every word must match; the best match comes first.
    assert_eq!(sorted(&server, &key, "search").await, ids(&["1", "2"]));
    assert_eq!(sorted(&server, &key, "brown fox").await, ids(&["2"]));
    let (first, _) = server
        .ids(&key, "products", json!({"q": "search engines"}))
        .await;
    assert_eq!(first[0], json!("1"));
    // One typo from five letters, two from nine, none below five.
    assert_eq!(sorted(&server, &key, "serch").await, ids(&["1", "2"]));
    assert_eq!(sorted(&server, &key, "invertde",).await, ids(&["1"]));
    assert_eq!(sorted(&server, &key, "explaiend").await, ids(&["1"]));
    assert!(sorted(&server, &key, "lapm").await.is_empty());
    // The last word matches the words it begins, unless asked not to.
    assert_eq!(sorted(&server, &key, "kitch").await, ids(&["5"]));
    let (none, _) = server
        .ids(&key, "products", json!({"q": "kitch", "prefix": false}))
        .await;
    assert!(none.is_empty());
    // A phrase keeps its order.
    assert_eq!(sorted(&server, &key, r#""quick brown""#).await, ids(&["2"]));
    assert_eq!(sorted(&server, &key, r#""brown quick""#).await, ids(&["4"]));
    // Excluded words, named fields, boosts.
    assert_eq!(sorted(&server, &key, "brown -fox").await, ids(&["3", "4"]));
    assert_eq!(sorted(&server, &key, "title:lamp").await, ids(&["4"]));
    assert_eq!(sorted(&server, &key, "tags:sport").await, ids(&["3"]));
    let (boosted, _) = server
        .ids(&key, "products", json!({"q": "brown title:lamp^10"}))
        .await;
    assert_eq!(boosted, [json!("4")]);
    // English stems on the title: "run" finds "Running".
    assert_eq!(sorted(&server, &key, "title:run").await, ids(&["3"]));
    // Chinese and Japanese text is found by its words.
    assert_eq!(sorted(&server, &key, "body_zh:北京").await, ids(&["4"]));
    assert_eq!(sorted(&server, &key, "body_zh:天安门").await, ids(&["4"]));
    assert_eq!(sorted(&server, &key, "body_zh:东京塔").await, ids(&["5"]));
    assert!(sorted(&server, &key, "body_zh:上海").await.is_empty());
    // An empty query matches everything.
    assert_eq!(sorted(&server, &key, "").await.len(), 5);
}

async fn settings_change_the_next_query(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, catalogue()).await;
    // "the" is in documents 2 and 5; as a stop word it is ignored.
    assert_eq!(
        server
            .ids(&key, "products", json!({"q": "the fox"}))
            .await
            .1,
        2
    );
    assert_eq!(
        server
            .ids(&key, "products", json!({"q": "the lamp"}))
            .await
            .1,
        0
    );
    let settings = json!({"stop_words": ["the"], "typo_tolerance": {"enabled": false}});
    server
        .ok(
            &key,
            Method::PUT,
            "/indexes/products/settings",
            Some(settings),
        )
        .await;
    assert_eq!(
        server
            .ids(&key, "products", json!({"q": "the lamp"}))
            .await
            .1,
        1
    );
    assert_eq!(
        server
            .ids(&key, "products", json!({"q": "serch", "prefix": false}))
            .await
            .1,
        0
    );
}

async fn pages_and_totals(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let documents: Vec<Value> = (0..25)
        .map(|n| json!({"id": format!("{n:02}"), "title": format!("widget {n}")}))
        .collect();
    with_products(&server, &key, json!(documents)).await;
    let mut seen = Vec::new();
    for offset in [0, 10, 20] {
        let page = server
            .ok(
                &key,
                Method::POST,
                "/indexes/products/search",
                Some(json!({"q": "widget", "limit": 10, "offset": offset})),
            )
            .await;
        assert_eq!(page["total"], 25);
        assert!(page["took_ms"].as_f64().unwrap() >= 0.0);
        seen.extend(
            page["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].clone()),
        );
    }
    seen.sort_by_key(|id| id.as_str().unwrap().to_owned());
    seen.dedup();
    assert_eq!(seen.len(), 25, "every hit once across the pages");
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"offset": 10001}),
    ] {
        let (status, code, _) = server
            .refused(&key, Method::POST, "/indexes/products/search", Some(bad))
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_field")
        );
    }
}

async fn malformed_queries_say_where(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    with_products(&server, &key, catalogue()).await;
    let cases = [
        (r#"lamp "brown"#, 5),
        ("lamp + desk", 5),
        ("colour:red", 0),
        ("lamp -", 5),
        ("price:cheap", 0),
        ("lamp^x", 4),
    ];
    for (query, position) in cases {
        let (status, code, body) = server
            .refused(
                &key,
                Method::POST,
                "/indexes/products/search",
                Some(json!({"q": query})),
            )
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{query}"
        );
        assert_eq!(body["details"]["position"], position, "{query}: {body}");
    }
}

async fn filters_narrow_the_hits(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    let documents: Vec<Value> = (0..10)
        .map(|n| {
            json!({
                "id": format!("{n}"), "title": "widget", "price": n as f64 * 1.5, "stock": n,
                "listed": n % 2 == 0, "tags": if n < 5 { vec!["small"] } else { vec!["large", "heavy"] },
                "added": format!("2026-12-{:02}T12:00:00Z", n + 1)
            })
        })
        .collect();
    with_products(&server, &key, json!(documents)).await;
    let hits = |filter: Value| {
        let server = &server;
        let key = &key;
        async move {
            let (mut ids, total) = server
                .ids(key, "products", json!({"q": "widget", "filter": filter}))
                .await;
            assert_eq!(ids.len() as u64, total);
            ids.sort_by_key(|id| id.as_str().unwrap().parse::<u32>().unwrap());
            ids.iter()
                .map(|id| id.as_str().unwrap().parse().unwrap())
                .collect::<Vec<u32>>()
        }
    };
    assert_eq!(hits(json!({"field": "stock", "eq": 3})).await, [3]);
    assert_eq!(
        hits(json!({"field": "tags", "in": ["heavy", "nothing"]})).await,
        [5, 6, 7, 8, 9]
    );
    assert_eq!(
        hits(json!({"field": "price", "gte": 3, "lt": 7.5})).await,
        [2, 3, 4]
    );
    assert_eq!(
        hits(json!({"field": "added", "gt": "2026-12-08T00:00:00Z"})).await,
        [7, 8, 9]
    );
    assert_eq!(
        hits(json!({"and": [{"field": "listed", "eq": true}, {"not": {"field": "tags", "eq": "small"}}]})).await,
        [6, 8]
    );
    assert_eq!(
        hits(json!({"or": [{"field": "stock", "lte": 1}, {"field": "stock", "gte": 9}]})).await,
        [0, 1, 9]
    );
    // A filter does not change the scores.
    let plain = server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/search",
            Some(json!({"q": "widget"})),
        )
        .await;
    let filtered = server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/search",
            Some(json!({"q": "widget", "filter": {"field": "stock", "eq": 0}})),
        )
        .await;
    let score = |page: &Value, id: &str| {
        page["hits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(score(&plain, "0"), score(&filtered, "0"));

    let bad = [
        (json!({"field": "colour", "eq": "red"}), "filter"),
        (json!({"field": "title", "eq": "widget"}), "filter"),
        (json!({"field": "stock", "eq": "three"}), "filter.eq"),
        (
            json!({"and": [{"field": "stock", "eq": 1}, {"field": "price"}]}),
            "filter.and[1]",
        ),
        (json!({"field": "stock", "gt": 1, "gte": 2}), "filter"),
        (json!({"field": "listed", "gt": false}), "filter"),
        (json!({"or": []}), "filter"),
        (json!({"and": [], "or": []}), "filter"),
        (json!(["stock"]), "filter"),
    ];
    for (filter, at) in bad {
        let (status, code, body) = server
            .refused(
                &key,
                Method::POST,
                "/indexes/products/search",
                Some(json!({"q": "", "filter": filter})),
            )
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_filter"),
            "{body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&format!("at `{at}`")), "{message}");
    }
}

/// The ids and scores of a search's hits, best first, with its total and next cursor.
async fn ranked(
    server: &Server,
    key: &str,
    body: Value,
) -> (Vec<(String, f64)>, u64, Option<String>) {
    let page = server
        .ok(key, Method::POST, "/indexes/products/search", Some(body))
        .await;
    let hits = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let next = page["next"].as_str().map(str::to_owned);
    (hits, page["total"].as_u64().unwrap(), next)
}

/// Four hundred documents of a few words each, drawn from a small vocabulary so that scores
/// spread and many tie.
fn spread(round: u64) -> Vec<Value> {
    const WORDS: [&str; 8] = [
        "amber", "ambers", "amberly", "umber", "cobalt", "cobalts", "slate", "ochre",
    ];
    let mut state = 0x2545_F491_4F6C_DD1D_u64 ^ round;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (0..400)
        .map(|n| {
            let mut pick = |count: u64| {
                (0..1 + next(count))
                    .map(|_| WORDS[next(WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            json!({"id": format!("{n:03}"), "title": pick(3), "body": pick(6), "tags": ["t"]})
        })
        .collect()
}

async fn relevance_pages_skip_and_repeat_nothing(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    server
        .ok(&key, Method::POST, "/indexes", Some(products()))
        .await;
    // Four writes make four segments; the later ones replace documents of the earlier, so
    // that those segments hold deleted documents too.
    for round in 0..4 {
        let documents: Vec<Value> = spread(round)
            .into_iter()
            .skip(round as usize * 60)
            .collect();
        server
            .ok(
                &key,
                Method::POST,
                "/indexes/products/documents?wait=true",
                Some(json!(documents)),
            )
            .await;
    }
    let queries = [
        json!({"q": "amber"}),
        json!({"q": "amber cobalt"}),
        json!({"q": "slate amb", "filter": {"field": "tags", "eq": "t"}}),
        json!({"q": "\"amber cobalt\""}),
        json!({"q": "umbers cob"}),
    ];
    for query in queries {
        let with = |extra: Value| {
            let mut body = query.clone();
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            body
        };
        // One page of all; the same with facets, which count every match unpruned.
        let (all, total, _) = ranked(&server, &key, with(json!({"limit": 1000}))).await;
        assert!(total > 18, "{query}: {total} hits is too few to page");
        assert_eq!(all.len() as u64, total, "{query}");
        let (unpruned, unpruned_total, _) = ranked(
            &server,
            &key,
            with(json!({"limit": 1000, "facets": ["tags"]})),
        )
        .await;
        assert_eq!(unpruned_total, total, "{query}");
        let differ = all.iter().zip(&unpruned).position(|(a, b)| a != b);
        assert_eq!(
            differ,
            None,
            "{query}: {:?}",
            differ.map(|n| (&all[n..n + 3], &unpruned[n..n + 3]))
        );
        for pair in all.windows(2) {
            let ((a, sa), (b, sb)) = (&pair[0], &pair[1]);
            assert!(
                sa > sb || (sa == sb && a < b),
                "{query}: {a} {sa} before {b} {sb}"
            );
        }
        // Cursors and offsets walk the same order, each hit once.
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut body = with(json!({"limit": 7}));
            if let Some(cursor) = &after {
                body["after"] = json!(cursor);
            }
            let (hits, page_total, next) = ranked(&server, &key, body).await;
            assert_eq!(page_total, total, "{query}");
            walked.extend(hits);
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let differ = walked.iter().zip(&all).position(|(a, b)| a != b);
        assert_eq!(
            differ,
            None,
            "{query}: by cursor {:?}",
            differ.map(|n| (
                &walked[n.saturating_sub(2)..n + 3],
                &all[n.saturating_sub(2)..n + 3]
            ))
        );
        assert_eq!(walked, all, "{query}: by cursor");
        let mut walked = Vec::new();
        for offset in (0..total).step_by(9) {
            let (hits, _, _) =
                ranked(&server, &key, with(json!({"limit": 9, "offset": offset}))).await;
            walked.extend(hits);
        }
        assert_eq!(walked, all, "{query}: by offset");
    }
}

async fn a_short_prefix_stands_for_its_most_frequent_words(backend: TestBackend) {
    let server = Server::start(backend).await;
    let key = server.tenant("shop", Quotas::default()).await;
    // The word `preNN` is in NN + 1 documents, so that the 20 most frequent of the 30 words
    // beginning `pre` (the most a prefix stands for) are pre10 to pre29.
    let documents: Vec<Value> = (0..30)
        .flat_map(|word| (0..=word).map(move |copy| (word, copy)))
        .map(|(word, copy)| {
            json!({"id": format!("{word:02}-{copy:02}"), "body": format!("pre{word:02}")})
        })
        .collect();
    with_products(&server, &key, json!(documents)).await;
    let total = |q: &'static str| {
        let server = &server;
        let key = &key;
        async move {
            server
                .ids(key, "products", json!({"q": q, "limit": 1}))
                .await
                .1
        }
    };
    assert_eq!(total("body:pre").await, (11..=30).sum::<u64>());
    // Under the cap, every word it begins.
    assert_eq!(total("body:pre0").await, (1..=10).sum::<u64>());
    assert_eq!(total("body:pre2").await, (21..=30).sum::<u64>());
    // What is highlighted is what was searched for.
    let page = server
        .ok(
            &key,
            Method::POST,
            "/indexes/products/search",
            Some(json!({"q": "body:pre", "limit": 1, "highlight": ["body"]})),
        )
        .await;
    let snippet = page["hits"][0]["highlights"]["body"].as_str().unwrap();
    // The rarest word kept scores highest.
    assert_eq!(snippet, "<mark>pre10</mark>");
}

plinth_shared::backend_tests!(
    words_typos_prefixes_and_phrases_match,
    filters_narrow_the_hits,
    settings_change_the_next_query,
    pages_and_totals,
    malformed_queries_say_where,
    relevance_pages_skip_and_repeat_nothing,
    a_short_prefix_stands_for_its_most_frequent_words,
);
