//! Hostile text: what a caller can put into a text field. Every refusal is a 422 whose
//! message names the field, and nothing is stored; none is a 500.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use picloud_manager_core::DEFAULT_APP_ID;

use crate::{Reply, TestApp, total};

const APPS: &str = "/api/admin/apps";

/// A NUL, an escape (the start of a terminal control sequence), a line break and a C1
/// control: each a control character.
const CONTROL_CHARACTERS: [&str; 4] = ["\u{0}", "\u{1b}[2J", "\n", "\u{85}"];

/// A right-to-left override and a first-strong isolate: the two "Trojan Source" favourites.
const BIDI_CONTROLS: [&str; 2] = ["\u{202E}", "\u{2068}"];

/// The reply is a 422; its body is shown when it is not.
fn assert_unprocessable(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
}

fn assert_refused(reply: &Reply, field: &str, rule: &str) {
    assert_unprocessable(reply);
    assert_eq!(reply.code(), "invalid_name", "{}", reply.body);
    assert!(
        reply.message().contains(field) && reply.message().contains(rule),
        "{}",
        reply.message()
    );
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn control_and_bidi_characters_in_an_app_name_are_422_and_nothing_is_stored(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let apps_before = total(&app.get(APPS).await.body);
    let cases = CONTROL_CHARACTERS
        .iter()
        .map(|c| (*c, "control characters"))
        .chain(BIDI_CONTROLS.iter().map(|c| (*c, "bidirectional")));
    for (bad, rule) in cases {
        let name = format!("shop{bad}name");
        let reply = app
            .json(Method::POST, APPS, &json!({ "slug": "shop", "name": name }))
            .await;
        assert_refused(&reply, "app name", rule);

        let uri = format!("{APPS}/{DEFAULT_APP_ID}");
        let reply = app
            .json(Method::PATCH, &uri, &json!({ "name": name }))
            .await;
        assert_refused(&reply, "app name", rule);
    }
    assert_eq!(total(&app.get(APPS).await.body), apps_before);
    let default = app.get(&format!("{APPS}/{DEFAULT_APP_ID}")).await;
    assert_eq!(default.body["name"], "Default");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn control_and_bidi_characters_in_a_token_name_are_422(pool: PgPool) {
    let app = TestApp::new(pool).await;
    for bad in CONTROL_CHARACTERS.iter().chain(&BIDI_CONTROLS) {
        let reply = app
            .json(
                Method::POST,
                "/api/admin/tokens",
                &json!({ "name": format!("deploy{bad}"), "scopes": ["script:read"] }),
            )
            .await;
        assert_unprocessable(&reply);
        assert!(
            reply.message().contains("token name"),
            "{}",
            reply.message()
        );
    }
    assert_eq!(total(&app.get("/api/admin/tokens").await.body), 0);
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn a_nul_in_script_source_is_a_compile_error_at_its_place(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let reply = app
        .json(
            Method::POST,
            "/api/admin/scripts",
            &json!({ "app_id": DEFAULT_APP_ID, "name": "nul", "source": "let a = 1;\nlet b = \"x\u{0}y\";" }),
        )
        .await;
    assert_unprocessable(&reply);
    assert_eq!(reply.code(), "compile_error");
    assert_eq!(reply.body["error"]["line"], 2);
    assert_eq!(reply.body["error"]["column"], 11);
    assert!(reply.message().contains("NUL"), "{}", reply.message());
    assert_eq!(total(&app.get("/api/admin/scripts").await.body), 0);

    // Tabs, line breaks and carriage returns are ordinary source.
    let fine = app.create("fine", "let a = 1;\r\n\tlet b = 2;\r\nb").await;
    assert_eq!(fine["name"], "fine");
}

#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn bad_text_in_kv_keys_and_values_is_422(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let kv = format!("{APPS}/{DEFAULT_APP_ID}/kv/notes");
    for bad in CONTROL_CHARACTERS.iter().chain(&BIDI_CONTROLS) {
        let key = urlencoding(&format!("k{bad}"));
        let reply = app
            .json(Method::PUT, &format!("{kv}/{key}"), &json!(1))
            .await;
        assert_unprocessable(&reply);
        assert_eq!(reply.code(), "invalid_name");
        assert!(reply.message().contains("key"), "{}", reply.message());
    }
    let reply = app
        .json(
            Method::PUT,
            &format!("{kv}/note"),
            &json!({ "deep": ["fine", "not\u{0}fine"] }),
        )
        .await;
    assert_unprocessable(&reply);
    assert!(reply.message().contains("NUL"), "{}", reply.message());
    let listed: Value = app.get(&kv).await.body;
    assert_eq!(listed["items"], json!([]), "{listed}");
}

/// Percent-encodes every byte outside the unreserved set, so control characters reach
/// the router as the path a hostile client would send.
fn urlencoding(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Found by the OpenAPI fuzzer: a list took any query parameter it did not know and
/// answered as if it were absent. Every list that takes a query refuses one, naming it.
#[sqlx::test(migrator = "picloud_manager_core::MIGRATOR")]
async fn an_unknown_query_parameter_is_refused_by_every_list(pool: PgPool) {
    let app = TestApp::new(pool).await;
    let lists = [
        "/api/admin/apps".to_owned(),
        "/api/admin/scripts".to_owned(),
        "/api/admin/triggers".to_owned(),
        "/api/admin/users".to_owned(),
        format!("/api/admin/apps/{DEFAULT_APP_ID}/dead-letters"),
        format!("/api/admin/apps/{DEFAULT_APP_ID}/kv/notes"),
    ];
    for list in lists {
        let reply = app.get(&format!("{list}?limt=5")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{list}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_query", "{list}");
        assert!(
            reply.message().contains("limt"),
            "{list}: {}",
            reply.message()
        );
    }
}
