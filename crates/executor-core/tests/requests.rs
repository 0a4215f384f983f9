//! What a script sees (`ctx`, `log::`) and how its answer becomes a response.

mod common;

use common::*;
use picloud_executor_core::{MAX_LOG_ENTRIES, json::MAX_JSON_DEPTH};
use picloud_shared::{ExecutorClient, HttpRequestData, LogLevel, ScriptLimits};
use serde_json::json;

#[tokio::test]
async fn a_string_is_a_text_response() {
    let response = ok(run(&client(), r#""hello, " + "pi""#).await);
    assert_eq!(response.status, 200);
    assert_eq!(text(&response), "hello, pi");
    assert_eq!(
        response.headers,
        [(
            "content-type".to_owned(),
            "text/plain; charset=utf-8".to_owned()
        )]
    );
}

#[tokio::test]
async fn maps_and_arrays_are_json_responses() {
    let client = client();
    let map = ok(run(
        &client,
        r#"#{name: "pi", tags: ["a", "b"], ok: true, none: ()}"#,
    )
    .await);
    assert_eq!(map.status, 200);
    assert_eq!(
        json(&map),
        json!({"name": "pi", "tags": ["a", "b"], "ok": true, "none": null})
    );

    let array = ok(run(&client, "[1, 2.5, \"three\", [4]]").await);
    assert_eq!(json(&array), json!([1, 2.5, "three", [4]]));

    let number = ok(run(&client, "40 + 2").await);
    assert_eq!(json(&number), json!(42));
}

#[tokio::test]
async fn a_blob_is_a_binary_response() {
    let response = ok(run(&client(), "let b = blob(3, 0x41); b[2] = 0xff; b").await);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.as_ref(), [0x41, 0x41, 0xff]);
    assert_eq!(
        header(&response, "content-type"),
        Some("application/octet-stream")
    );
}

#[tokio::test]
async fn unit_is_an_empty_response() {
    let response = ok(run(&client(), "let x = 1;").await);
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    assert!(response.headers.is_empty(), "{:?}", response.headers);
}

#[tokio::test]
async fn blobs_inside_json_are_base64() {
    let response = ok(run(&client(), r#"#{data: blob(3, 0x61)}"#).await);
    assert_eq!(json(&response), json!({"data": "YWFh"}));
}

#[tokio::test]
async fn structured_responses_set_status_headers_and_body() {
    let source = r#"#{statusCode: 201, headers: #{"X-Item": "7"}, body: #{id: 7}}"#;
    let response = ok(run(&client(), source).await);
    assert_eq!(response.status, 201);
    assert_eq!(header(&response, "x-item"), Some("7"));
    assert_eq!(json(&response), json!({"id": 7}));
}

#[tokio::test]
async fn a_content_type_set_by_the_script_wins() {
    let source =
        r#"#{statusCode: 200, headers: #{"Content-Type": "text/html"}, body: "<p>hi</p>"}"#;
    let response = ok(run(&client(), source).await);
    let content_types: Vec<_> = response
        .headers
        .iter()
        .filter(|(name, _)| name == "content-type")
        .collect();
    assert_eq!(
        content_types,
        [&("content-type".to_owned(), "text/html".to_owned())]
    );
    assert_eq!(text(&response), "<p>hi</p>");
}

#[tokio::test]
async fn a_structured_response_may_omit_the_body() {
    let response = ok(run(&client(), "#{statusCode: 204}").await);
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
}

#[tokio::test]
async fn a_map_without_status_code_is_plain_json() {
    let response = ok(run(&client(), "#{status: 404}").await);
    assert_eq!(response.status, 200);
    assert_eq!(json(&response), json!({"status": 404}));
}

#[tokio::test]
async fn bad_response_fields_are_named() {
    let client = client();
    let cases = [
        (
            r#"#{statusCode: "200"}"#,
            r#"response statusCode must be an integer from 200 to 599, got "200""#,
        ),
        (
            "#{statusCode: 99}",
            "response statusCode must be an integer from 200 to 599, got 99 (i64)",
        ),
        (
            "#{statusCode: 101}",
            "response statusCode must be an integer from 200 to 599, got 101 (i64)",
        ),
        (
            r#"#{statusCode: 200, headers: #{"Content-Length": "0"}}"#,
            r#"response header "Content-Length" is set by PiCloud from the real body and connection; a script may not set it"#,
        ),
        (
            r#"#{statusCode: 200, headers: #{"transfer-encoding": "chunked"}}"#,
            r#"response header "transfer-encoding" is set by PiCloud from the real body and connection; a script may not set it"#,
        ),
        (
            r#"#{statusCode: 200, headers: #{"proxy-authenticate": "Basic"}}"#,
            r#"response header "proxy-authenticate" is set by PiCloud from the real body and connection; a script may not set it"#,
        ),
        (
            r#"#{statusCode: 200, headers: "x"}"#,
            r#"response headers must be a map of strings, got "x""#,
        ),
        (
            "#{statusCode: 200, headers: #{n: 1}}",
            "response headers.n must be a string, got 1 (i64)",
        ),
    ];
    for (source, expected) in cases {
        let (message, _, _) = script_error(run(&client, source).await);
        assert_eq!(message, expected, "{source}");
    }
}

fn full_request() -> HttpRequestData {
    HttpRequestData {
        method: "POST".to_owned(),
        path: "/items/42".to_owned(),
        query: vec![
            ("page".to_owned(), "1".to_owned()),
            ("tag".to_owned(), "a".to_owned()),
            ("tag".to_owned(), "b".to_owned()),
        ],
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-multi".to_owned(), "one".to_owned()),
            ("x-multi".to_owned(), "two".to_owned()),
            ("X-Upper".to_owned(), "v".to_owned()),
        ],
        body: r#"{"name":"pi","n":[1,2]}"#.into(),
    }
}

#[tokio::test]
async fn ctx_carries_the_ids_and_the_request() {
    let script = script("ctx");
    let request = request(script, Some(full_request()));
    let expected_ids = json!({
        "execution_id": request.execution_id.to_string(),
        "script_id": request.script.id.to_string(),
        "script_name": "handler",
        "app_id": request.script.app_id.to_string(),
        "request_id": request.request_id.as_str(),
        "invocation_type": "http",
        "event": null,
        "caller": null,
    });

    let response = ok(client().execute(request).await);
    let mut ctx = json(&response);
    let request_seen = ctx
        .as_object_mut()
        .and_then(|ctx| ctx.remove("request"))
        .unwrap();
    assert_eq!(ctx, expected_ids);
    assert_eq!(
        request_seen,
        json!({
            "method": "POST",
            "path": "/items/42",
            "query": {"page": "1", "tag": "b"},
            "headers": {
                "content-type": "application/json",
                "x-multi": "one, two",
                "x-upper": "v",
            },
            "body": r#"{"name":"pi","n":[1,2]}"#,
            "json": {"name": "pi", "n": [1, 2]},
        })
    );
}

#[tokio::test]
async fn ctx_request_is_unit_without_an_http_request() {
    let report = client()
        .execute(request(script("type_of(ctx.request)"), None))
        .await;
    assert_eq!(text(&ok(report)), "()");
}

#[tokio::test]
async fn json_is_unit_when_the_body_is_not_json() {
    let client = client();
    let source = "type_of(ctx.request.json)";
    let invalid = run_http(&client, source, post("application/json", "{nope")).await;
    assert_eq!(text(&ok(invalid)), "()");

    let undeclared = run_http(&client, source, post("text/plain", r#"{"a":1}"#)).await;
    assert_eq!(text(&ok(undeclared)), "()");

    let declared = run_http(&client, source, post("application/json", r#"{"a":1}"#)).await;
    assert_eq!(text(&ok(declared)), "map");
}

#[tokio::test]
async fn json_round_trips_through_a_script() {
    let body = json!({
        "nested": {"list": [1, 2.5, {"deep": [true, false, null]}], "empty": {}},
        "text": "héllo \"quoted\"",
        "big": 9_007_199_254_740_993_i64,
        "negative": -3,
    });
    let http = post("application/vnd.api+json", body.to_string());
    let response = ok(run_http(&client(), "ctx.request.json", http).await);
    assert_eq!(json(&response), body);
}

#[tokio::test]
async fn json_beyond_the_sandbox_limits_is_unit_not_a_crash() {
    let limits = ScriptLimits {
        max_array_size: Some(10),
        ..ScriptLimits::default()
    };
    let big = serde_json::to_string(&vec![1; 100]).unwrap();
    let report = client()
        .execute(request(
            script_with_limits(
                "[type_of(ctx.request.json), ctx.request.body.len()]",
                limits,
            ),
            Some(post("application/json", big)),
        ))
        .await;
    assert_eq!(json(&ok(report)), json!(["()", 201]));

    let deep = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH * 100),
        "]".repeat(MAX_JSON_DEPTH * 100)
    );
    let report = run_http(
        &client(),
        "type_of(ctx.request.json)",
        post("application/json", deep),
    )
    .await;
    assert_eq!(text(&ok(report)), "()");
}

#[tokio::test]
async fn a_non_utf8_body_is_a_blob() {
    let http = post("application/octet-stream", vec![0xff, 0xfe, 0x00, 0x41]);
    let client = client();
    let kind = run_http(&client, "type_of(ctx.request.body)", http.clone()).await;
    assert_eq!(text(&ok(kind)), "blob");

    let echoed = ok(run_http(&client, "ctx.request.body", http).await);
    assert_eq!(echoed.body.as_ref(), [0xff, 0xfe, 0x00, 0x41]);
}

#[tokio::test]
async fn logs_are_captured_at_every_level() {
    let source = r#"
        log::trace("t");
        log::info("i");
        log::warn(#{a: 1});
        log::error(42);
        "done"
    "#;
    let report = run(&client(), source).await;
    let lines: Vec<_> = report
        .logs
        .iter()
        .map(|entry| (entry.level, entry.message.clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogLevel::Trace, "t".to_owned()),
            (LogLevel::Info, "i".to_owned()),
            (LogLevel::Warn, r#"#{"a": 1}"#.to_owned()),
            (LogLevel::Error, "42".to_owned()),
        ]
    );
    assert_eq!(text(&ok(report)), "done");
}

#[tokio::test]
async fn logs_survive_a_failure() {
    let report = run(&client(), r#"log::info("before"); throw "after";"#).await;
    assert_eq!(report.logs.len(), 1);
    assert_eq!(report.logs[0].message, "before");
    assert!(report.outcome.is_err());
}

#[tokio::test]
async fn the_log_is_capped() {
    let report = run(&client(), "for i in 0..1500 { log::info(i) } 1").await;
    assert_eq!(report.logs.len(), MAX_LOG_ENTRIES + 1);
    assert_eq!(report.logs[MAX_LOG_ENTRIES - 1].message, "999");
    let last = report.logs.last().unwrap();
    assert_eq!(last.level, LogLevel::Warn);
    assert_eq!(last.message, "log limit reached, 500 lines dropped");
    assert_eq!(text(&ok(report)), "1");
}
