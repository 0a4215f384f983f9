//! The KV browser: `/api/admin/apps/{id}/kv/...`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use picloud_shared::{AppRole, EventSubject, KvOp, MAX_KV_VALUE_BYTES, Scope};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{Reply, TestApp};

fn kv(app: impl std::fmt::Display, rest: &str) -> String {
    format!("/api/admin/apps/{app}/kv{rest}")
}

fn ops(app: &TestApp) -> Vec<(KvOp, String, String, Option<Value>, u32)> {
    app.kv_events
        .events()
        .into_iter()
        .map(|e| {
            assert_eq!(e.causation_id, None, "an admin change has no causing run");
            let EventSubject::Kv {
                collection,
                key,
                op,
                value,
            } = e.subject
            else {
                panic!("the kv service emitted a {} event", e.subject.kind());
            };
            (op, collection, key, value, e.depth)
        })
        .collect()
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn put_get_list_and_delete_round_trip(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;

    let put = app
        .json(
            Method::PUT,
            &kv(shop, "/users/ada"),
            &json!({ "name": "Ada", "langs": ["en", "fr"] }),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.body);
    let got = app.get(&kv(shop, "/users/ada")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, json!({ "name": "Ada", "langs": ["en", "fr"] }));

    // Any JSON is a value, and a put replaces what was there.
    for (key, value) in [
        ("bob", json!(42)),
        ("carl", json!("text")),
        ("ada", json!(null)),
    ] {
        let reply = app
            .json(Method::PUT, &kv(shop, &format!("/users/{key}")), &value)
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    }
    app.json(Method::PUT, &kv(shop, "/orders:2024/o1"), &json!(true))
        .await;
    let null = app.get(&kv(shop, "/users/ada")).await;
    assert_eq!((null.status, null.body), (StatusCode::OK, Value::Null));

    let collections = app.get(&kv(shop, "")).await;
    assert_eq!(collections.status, StatusCode::OK);
    assert_eq!(
        collections.body,
        json!({ "items": [
            { "name": "orders:2024", "keys": 1 },
            { "name": "users", "keys": 3 },
        ]})
    );

    let first = app.get(&kv(shop, "/users?limit=2")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let keys = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&first.body), ["ada", "bob"]);
    assert_eq!(first.body["items"][1]["value"], 42);
    assert!(first.body["items"][0]["updated_at"].is_string());
    assert_eq!(first.body["next_cursor"], "bob");
    let second = app.get(&kv(shop, "/users?limit=2&cursor=bob")).await;
    assert_eq!(keys(&second.body), ["carl"]);
    assert!(second.body.get("next_cursor").is_none(), "{}", second.body);
    let prefixed = app.get(&kv(shop, "/users?prefix=b")).await;
    assert_eq!(keys(&prefixed.body), ["bob"]);
    let empty = app.get(&kv(shop, "/nothing-here")).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({ "items": [] }));

    let deleted = app.delete(&kv(shop, "/users/bob")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let again = app.delete(&kv(shop, "/users/bob")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.code(), "not_found");
    assert_eq!(again.message(), "key 'bob' not found in collection 'users'");
    let missing = app.get(&kv(shop, "/users/bob")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "not_found");

    // Every change emitted one event at depth 1; the failed delete emitted none.
    assert_eq!(
        ops(&app),
        [
            (
                KvOp::Set,
                "users".into(),
                "ada".into(),
                Some(json!({ "name": "Ada", "langs": ["en", "fr"] })),
                1
            ),
            (KvOp::Set, "users".into(), "bob".into(), Some(json!(42)), 1),
            (
                KvOp::Set,
                "users".into(),
                "carl".into(),
                Some(json!("text")),
                1
            ),
            (
                KvOp::Set,
                "users".into(),
                "ada".into(),
                Some(json!(null)),
                1
            ),
            (
                KvOp::Set,
                "orders:2024".into(),
                "o1".into(),
                Some(json!(true)),
                1
            ),
            (KvOp::Delete, "users".into(), "bob".into(), None, 1),
        ]
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn keys_are_free_text_when_percent_encoded(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = kv(shop, "/files/a%2Fb%20c%3Fd%C3%A9");
    let put = app.json(Method::PUT, &uri, &json!(1)).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.body);
    assert_eq!(app.get(&uri).await.body, json!(1));
    let page = app.get(&kv(shop, "/files?prefix=a%2F")).await;
    assert_eq!(page.body["items"][0]["key"], "a/b c?dé");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_names_values_and_queries_are_refused_naming_the_problem(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;

    let reply = app
        .json(Method::PUT, &kv(shop, "/bad%20name/k"), &json!(1))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_name");
    assert_eq!(
        reply.message(),
        "collection name may contain only ASCII letters, digits, '_', '-', '.' and ':'"
    );
    let reply = app.get(&kv(shop, "/users/tab%09key")).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.message(), "key must not contain control characters");
    let long_key = "k".repeat(513);
    let reply = app.get(&kv(shop, &format!("/users/{long_key}"))).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.message(),
        "key is 513 bytes, over the limit of 512 bytes"
    );
    let reply = app.get(&kv(shop, "/users/%FF")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_path");

    // 64 KiB of compact JSON is accepted; one byte more is refused, naming the key.
    let fits = json!("a".repeat(MAX_KV_VALUE_BYTES - 2));
    let reply = app.json(Method::PUT, &kv(shop, "/big/fits"), &fits).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(app.get(&kv(shop, "/big/fits")).await.body, fits);
    let over = json!("a".repeat(MAX_KV_VALUE_BYTES - 1));
    let reply = app.json(Method::PUT, &kv(shop, "/big/over"), &over).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.code(), "value_too_large");
    assert_eq!(
        reply.message(),
        "value for key 'over' is 65537 bytes, over the limit of 65536 bytes"
    );
    assert_eq!(
        app.get(&kv(shop, "/big/over")).await.status,
        StatusCode::NOT_FOUND
    );
    let reply = app
        .json(Method::PUT, &kv(shop, "/big/nul"), &json!("a\u{0}b"))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "invalid_argument");
    assert!(reply.message().contains("NUL"), "{}", reply.message());

    let reply = app
        .raw_json(Method::PUT, &kv(shop, "/big/broken"), "{")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "malformed_json");
    for query in ["limit=0", "limit=1001", "limit=x"] {
        let reply = app.get(&kv(shop, &format!("/users?{query}"))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.code(), "invalid_query", "{query}");
    }
    let reply = app.get("/api/admin/apps/not-a-uuid/kv/users/k").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "invalid_id");
    let reply = app.get(&kv(picloud_shared::AppId::new(), "/users")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn reading_needs_a_viewer_and_changing_needs_a_developer(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let other = app.add_app("other").await;
    app.json(Method::PUT, &kv(shop, "/users/ada"), &json!(1))
        .await;
    let viewer = app.user_with_role("vera", shop, AppRole::Viewer).await;
    let viewer = app.session(viewer.id).await;
    let developer = app.user_with_role("dev", shop, AppRole::Developer).await;
    let read_only = app.token(developer.id, &[Scope::DataRead], None).await;
    let developer = app.session(developer.id).await;

    let reply = app.caller(&viewer).get(&kv(shop, "/users/ada")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = app
        .caller(&viewer)
        .json(Method::PUT, &kv(shop, "/users/ada"), &json!(2))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.message().contains("data:write"),
        "{}",
        reply.message()
    );
    let reply = app.caller(&read_only).delete(&kv(shop, "/users/ada")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get(&kv(shop, "/users/ada")).await.body, json!(1));

    let reply = app
        .caller(&developer)
        .json(Method::PUT, &kv(shop, "/users/ada"), &json!(3))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&kv(shop, "/users/ada")).await.body, json!(3));

    // Another app's data answers exactly like a missing app.
    let reply = app.caller(&developer).get(&kv(other, "")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn each_app_sees_only_its_own_entries(pool: PgPool) {
    let app = TestApp::new(pool.clone()).await;
    let alpha = app.add_app("alpha").await;
    let beta = app.add_app("beta").await;
    app.json(Method::PUT, &kv(alpha, "/users/ada"), &json!("alpha's"))
        .await;
    assert_eq!(
        app.get(&kv(beta, "/users/ada")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&kv(beta, "")).await.body, json!({ "items": [] }));
    app.json(Method::PUT, &kv(beta, "/users/ada"), &json!("beta's"))
        .await;
    assert_eq!(app.get(&kv(alpha, "/users/ada")).await.body, "alpha's");
    assert_eq!(app.get(&kv(beta, "/users/ada")).await.body, "beta's");

    // Deleting an app takes its entries with it.
    let reply = app.delete(&format!("/api/admin/apps/{beta}")).await;
    assert!(reply.status.is_success(), "{}", reply.body);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM kv_entries WHERE app_id = $1")
        .bind(beta.as_uuid())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(app.get(&kv(alpha, "/users/ada")).await.body, "alpha's");
}

/// Puts `value` as the admin with extra request headers.
async fn put_with(app: &TestApp, uri: &str, value: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::put(uri).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.admin()
        .send(request.body(Body::from(value.to_string())).unwrap())
        .await
}

/// The reply's `ETag`, asserting it is a quoted version, and that version.
fn etag(reply: &Reply) -> (String, i64) {
    let tag = reply
        .headers
        .get(header::ETAG)
        .unwrap_or_else(|| panic!("no etag in {:?}", reply.headers))
        .to_str()
        .unwrap()
        .to_owned();
    let version = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("etag {tag} is not a quoted version"));
    (tag, version)
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_read_answers_the_version_as_its_etag_and_a_put_the_new_one(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = kv(shop, "/users/ada");

    let first = put_with(&app, &uri, &json!(1), &[]).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.body);
    let (first_tag, first_version) = etag(&first);
    let read = app.get(&uri).await;
    assert_eq!((read.status, &read.body), (StatusCode::OK, &json!(1)));
    assert_eq!(etag(&read).0, first_tag);

    let second = put_with(&app, &uri, &json!(2), &[]).await;
    let (second_tag, second_version) = etag(&second);
    assert!(
        second_version > first_version,
        "{first_tag} then {second_tag}"
    );
    assert_eq!(etag(&app.get(&uri).await).0, second_tag);

    // The list shows the same version the entity tag carries.
    let page = app.get(&kv(shop, "/users")).await;
    assert_eq!(page.body["items"][0]["key"], "ada");
    assert_eq!(page.body["items"][0]["version"], second_version);

    // A missing key has no tag to give.
    let missing = app.get(&kv(shop, "/users/bob")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.headers.get(header::ETAG).is_none());
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn if_match_stores_only_while_the_key_holds_that_version(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = kv(shop, "/users/ada");

    // Nothing stored: no version can match.
    let absent = put_with(&app, &uri, &json!("x"), &[("if-match", "\"1\"")]).await;
    assert_eq!(
        absent.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        absent.body
    );
    assert_eq!(absent.code(), "precondition_failed");
    assert_eq!(app.get(&uri).await.status, StatusCode::NOT_FOUND);

    let (read_tag, _) = etag(&put_with(&app, &uri, &json!("first"), &[]).await);
    let events_before = ops(&app).len();

    // Someone else writes in between: the tag the first editor read no longer holds.
    let (their_tag, their_version) =
        etag(&put_with(&app, &uri, &json!("theirs"), &[("if-match", &read_tag)]).await);
    let stale = put_with(&app, &uri, &json!("mine"), &[("if-match", &read_tag)]).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(stale.code(), "precondition_failed");
    assert_eq!(
        stale.message(),
        format!(
            "key 'ada' in collection 'users' is not at version {}",
            &read_tag[1..read_tag.len() - 1]
        )
    );
    assert!(stale.headers.get(header::ETAG).is_none());
    let read = app.get(&uri).await;
    assert_eq!(read.body, "theirs", "the refused put changed nothing");
    assert_eq!(etag(&read).0, their_tag);
    // Only the put that held emitted an event.
    let events = ops(&app);
    assert_eq!(events.len(), events_before + 1, "{events:?}");
    assert_eq!(events.last().unwrap().3, Some(json!("theirs")));

    // With the current tag it goes through, and answers the next one. Spaces around the
    // tag are the header's, not the tag's.
    let matched = put_with(
        &app,
        &uri,
        &json!("mine"),
        &[("if-match", &format!(" {their_tag} "))],
    )
    .await;
    assert_eq!(matched.status, StatusCode::NO_CONTENT, "{}", matched.body);
    let (mine_tag, mine_version) = etag(&matched);
    assert!(mine_version > their_version);
    let read = app.get(&uri).await;
    assert_eq!(
        (&read.body, etag(&read).0),
        (&json!("mine"), mine_tag.clone())
    );

    // A deleted key matches no version, not even its last one.
    assert_eq!(app.delete(&uri).await.status, StatusCode::NO_CONTENT);
    let gone = put_with(&app, &uri, &json!("back"), &[("if-match", &mine_tag)]).await;
    assert_eq!(
        gone.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        gone.body
    );
    assert_eq!(app.get(&uri).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn if_none_match_star_stores_only_while_the_key_holds_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = kv(shop, "/users/ada");

    let created = put_with(&app, &uri, &json!("first"), &[("if-none-match", "*")]).await;
    assert_eq!(created.status, StatusCode::NO_CONTENT, "{}", created.body);
    let (created_tag, created_version) = etag(&created);
    assert_eq!(etag(&app.get(&uri).await).0, created_tag);

    let exists = put_with(&app, &uri, &json!("second"), &[("if-none-match", "*")]).await;
    assert_eq!(
        exists.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        exists.body
    );
    assert_eq!(exists.code(), "precondition_failed");
    assert_eq!(
        exists.message(),
        "key 'ada' already exists in collection 'users'"
    );
    assert_eq!(app.get(&uri).await.body, "first");
    assert_eq!(ops(&app).len(), 1, "the refused put emitted nothing");

    // Once deleted, the key can be created again, under a version never given before.
    assert_eq!(app.delete(&uri).await.status, StatusCode::NO_CONTENT);
    let again = put_with(&app, &uri, &json!("third"), &[("if-none-match", "*")]).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.body);
    assert!(etag(&again).1 > created_version);
    assert_eq!(app.get(&uri).await.body, "third");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn preconditions_that_are_not_a_version_are_refused_and_store_nothing(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let shop = app.add_app("shop").await;
    let uri = kv(shop, "/users/ada");
    let (tag, version) = etag(&put_with(&app, &uri, &json!("kept"), &[]).await);
    let bare = version.to_string();
    let weak = format!("W/{tag}");
    let list = format!("{tag}, \"{}\"", version + 1);

    for (name, value) in [
        ("if-match", bare.as_str()),
        ("if-match", weak.as_str()),
        ("if-match", list.as_str()),
        ("if-match", "*"),
        ("if-match", "\"\""),
        ("if-match", "\"abc\""),
        ("if-match", "\"-1\""),
        ("if-match", "\"+1\""),
        ("if-match", "\"99999999999999999999\""),
        ("if-match", ""),
        ("if-none-match", tag.as_str()),
        ("if-none-match", "W/*"),
    ] {
        let reply = put_with(&app, &uri, &json!("changed"), &[(name, value)]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {value}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_argument", "{name}: {value}");
        assert!(reply.message().contains(name), "{}", reply.message());
    }
    // Both at once cannot hold.
    let both = put_with(
        &app,
        &uri,
        &json!("changed"),
        &[("if-match", &tag), ("if-none-match", "*")],
    )
    .await;
    assert_eq!(
        both.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        both.body
    );
    assert_eq!(both.code(), "precondition_failed");

    let read = app.get(&uri).await;
    assert_eq!((&read.body, etag(&read).1), (&json!("kept"), version));
    assert_eq!(ops(&app).len(), 1, "only the first put emitted");
}
