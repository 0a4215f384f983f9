//! Hostile callers and hostile scripts against the real server: each test is an attack
//! from the security review that must fail, one class of it per test.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the first surprise"
)]
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly on the first surprise"
)]

#[allow(
    dead_code,
    reason = "each test target uses its own part of the support module"
)]
mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::{
    ADMIN_PASSWORD, error_code, login, spawn_app, spawn_app_with, start_binary, wait_for_execution,
};

// Installed as in the `picloud` binary, so in-process servers meter runs the same way.
#[global_allocator]
static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
    picloud_executor_core::RunMemoryAllocator;

/// H1: a script that logs every header it sees, called with an instance admin's session,
/// learns who called and never the session itself, whether it requires a token or not.
#[tokio::test]
async fn a_callers_credential_never_reaches_a_script_its_logs_or_its_records() {
    let app = spawn_app().await;
    let session = login(&app.anonymous, &app.base, "admin", ADMIN_PASSWORD).await;
    let grab = r#"
        log::info(`headers=${ctx.request.headers}`);
        let who = if ctx.caller == () { "nobody" } else {
            `${ctx.caller.username} ${ctx.caller.credential} ${ctx.caller.token_name}`
        };
        `${who}|${ctx.request.headers.authorization}`
    "#;
    let created = app
        .client
        .post(app.url("/api/admin/scripts"))
        .json(
            &json!({ "app_id": picloud_manager_core::DEFAULT_APP_ID, "name": "grab",
                       "source": grab, "require_token": true }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    app.create_script("open-grab", grab).await;

    let call = |name: &'static str, authorization: String| {
        let request = app
            .anonymous
            .get(app.url(&format!("/api/run/default/{name}")))
            .header("authorization", authorization);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let execution_id = response.headers()[picloud_orchestrator_core::EXECUTION_ID_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            (response.text().await.unwrap(), execution_id)
        }
    };

    let (body, private_run) = call("grab", format!("Bearer {session}")).await;
    assert_eq!(body, "admin session login session|");
    let (body, public_run) = call("open-grab", format!("Bearer {session}")).await;
    assert_eq!(
        body, "nobody|",
        "a PiCloud token is dropped before a public script"
    );
    let (body, _) = call("open-grab", "Bearer whsec_own".to_owned()).await;
    assert_eq!(
        body, "nobody|Bearer whsec_own",
        "a public script's own credentials still reach it"
    );

    for run in [private_run, public_run] {
        let record = wait_for_execution(&app, &run).await.to_string();
        assert!(record.contains("headers="), "{record}");
        assert!(!record.contains(&session), "{record}");
        assert!(!record.contains("pc_"), "{record}");
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// H2: memory bombs against the real binary, each stopped with 507 while the server's
/// peak memory grows by no more than one run's budget and a margin.
#[tokio::test]
async fn memory_bombs_are_stopped_within_the_run_budget_and_the_server_keeps_serving() {
    const BUDGET_MIB: u64 = 32;
    const MARGIN_MIB: u64 = 32;
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = support::fresh_database_url();
    let server = start_binary(
        data_dir.path(),
        &[
            ("PICLOUD_DATABASE_URL", &database_url),
            ("PICLOUD_ADMIN_PASSWORD", ADMIN_PASSWORD),
            (
                "PICLOUD_SANDBOX_MAX_MEMORY_BYTES",
                &(BUDGET_MIB << 20).to_string(),
            ),
        ],
    );
    let client = reqwest::Client::new();
    let session = server.login(&client, ADMIN_PASSWORD).await;
    let create = |name: &str, source: &str| {
        // Nesting is checked by walking the nested value on every operation, so deep
        // nesting is bombed under a smaller array limit to keep the test quick.
        let limits = json!({ "max_array_size": 2000 });
        let request = client
            .post(format!("{}/api/admin/scripts", server.base))
            .bearer_auth(&session)
            .json(
                &json!({ "app_id": picloud_manager_core::DEFAULT_APP_ID, "name": name,
                           "source": source, "limits": limits }),
            );
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
        }
    };
    let run = |name: &str| {
        client
            .get(format!("{}/api/run/default/{name}", server.base))
            .send()
    };

    create("hello", r#""hello""#).await;
    assert_eq!(run("hello").await.unwrap().status(), StatusCode::OK);
    let bombs = [
        (
            "index-array",
            r#"let s = ""; s.pad(1000000, "x"); let a = []; a.pad(1500, ());
               for i in 0..1500 { a[i] = s + i.to_string(); } a.len()"#,
        ),
        (
            "index-map",
            r#"let s = ""; s.pad(1000000, "x"); let m = #{};
               for i in 0..1500 { m[`k${i}`] = s + i.to_string(); } m.len()"#,
        ),
        ("string", r#"let s = "x"; loop { s += s; }"#),
        ("array", "let a = [1]; loop { a += a; }"),
        ("nesting", "let a = []; loop { a = [a]; }"),
    ];
    for (name, source) in bombs {
        create(name, source).await;
    }

    // The peak is measured from here: `clear_refs` 5 resets VmHWM to the current RSS.
    let pid = server.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before_kib = proc_status_kib(pid, "VmRSS");
    for (name, _) in bombs {
        let (status, code, body) = error_code(run(name).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::INSUFFICIENT_STORAGE, "resource_limit"),
            "{name}: {body}"
        );
    }
    let growth_mib = proc_status_kib(pid, "VmHWM").saturating_sub(before_kib) / 1024;
    assert!(
        growth_mib <= BUDGET_MIB + MARGIN_MIB,
        "peak RSS grew by {growth_mib} MiB for a {BUDGET_MIB} MiB run budget"
    );

    let hello = run("hello").await.unwrap();
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text().await.unwrap(), "hello");
    assert_eq!(server.terminate(), 0);
}

#[tokio::test]
async fn a_script_cannot_smuggle_a_response_onto_a_kept_alive_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let source = r#"
        #{ statusCode: 200, headers: #{ "content-length": "0" },
           body: "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nPWNED!" }
    "#;
    let created = app.create_script("split", source).await;
    let id = created["id"].as_str().unwrap();

    // Two requests pipelined on one connection, the second closing it: exactly two
    // responses come back, the script's refusal and the real health check.
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let pipelined = format!(
        "GET /api/execute/{id} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut wire))
        .await
        .expect("the server closes the connection after the second response")
        .unwrap();
    let wire = String::from_utf8_lossy(&wire);
    assert!(!wire.contains("PWNED"), "{wire}");
    assert_eq!(wire.matches("HTTP/1.1 ").count(), 2, "{wire}");
    assert!(wire.starts_with("HTTP/1.1 422 "), "{wire}");
    assert!(wire.contains(r#"a script may not set it"#), "{wire}");
    let second = &wire[wire.rfind("HTTP/1.1 ").unwrap()..];
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
}

#[tokio::test]
async fn a_page_a_script_serves_is_sandboxed_away_from_the_admin_origin() {
    let app = spawn_app().await;
    let source = r#"
        #{ statusCode: 200,
           headers: #{ "content-type": "text/html", "content-security-policy": "img-src 'self'" },
           body: "<script>fetch('/api/admin/users')</script>" }
    "#;
    let created = app.create_script("page", source).await;
    let response = app.execute(created["id"].as_str().unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let policies: Vec<_> = response
        .headers()
        .get_all("content-security-policy")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        policies,
        [
            "img-src 'self'",
            picloud_orchestrator_core::SCRIPT_RESPONSE_POLICY
        ],
        "the script's own policy is kept and the sandbox added"
    );
    assert!(!policies[1].contains("allow-same-origin"));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

/// M8: slowloris. Connections that never finish their headers are closed at the header
/// timeout, and past the connection cap new clients wait rather than pile up.
#[tokio::test]
async fn half_sent_headers_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(&[
        ("PICLOUD_HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("PICLOUD_HTTP_MAX_CONNECTIONS", "4"),
    ])
    .await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Give the server a moment to take the four connections, filling the cap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A fresh client: a pooled connection from before would skip the queue.
    let waiting = reqwest::Client::new().get(app.url("/healthz")).send();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let response = waiting.await.unwrap();
        (response.status(), started.elapsed())
    });

    for mut stream in slow {
        let mut rest = Vec::new();
        // A reset is a close too; only the time it takes matters.
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
            .await
            .expect("the server closes a connection whose headers never end");
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a half-sent request is never served"
        );
    }
    let (status, waited) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK, "served once a connection came free");
    assert!(
        waited >= Duration::from_millis(500),
        "while the cap was full the client waited ({waited:?})"
    );
}

/// M8: a body trickled in slower than the body timeout is refused with 408, on the data
/// plane and on the admin API.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(&[("PICLOUD_HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    app.create_script("echo", "ctx.request.body").await;
    let session = login(&app.anonymous, &app.base, "admin", ADMIN_PASSWORD).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    for head in [
        "POST /api/run/default/echo HTTP/1.1\r\nHost: x\r\n".to_owned(),
        format!(
            "POST /api/admin/scripts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {session}\r\n\
             Content-Type: application/json\r\n"
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let request = format!("{head}Content-Length: 100\r\nConnection: close\r\n\r\n{{\"na");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered at the body timeout")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
}

/// M8, for large bodies: every `PICLOUD_HTTP_MIN_BODY_RATE` bytes that arrive buy the body
/// another second, so an upload that keeps a usable rate outlasts the body timeout; one
/// that stalls is still cut off once its earned time is spent.
#[tokio::test]
async fn a_body_keeping_the_minimum_rate_outlasts_the_body_timeout_and_a_stall_does_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(&[
        ("PICLOUD_HTTP_BODY_TIMEOUT_SECS", "1"),
        ("PICLOUD_HTTP_MIN_BODY_RATE", "4096"),
    ])
    .await;
    let session = login(&app.anonymous, &app.base, "admin", ADMIN_PASSWORD).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let upload = |name: &str, chunks: usize, pause: Duration| {
        let (address, session) = (address.clone(), session.clone());
        let head = format!(
            "PUT /api/admin/apps/{}/files/slow/{name} HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer {session}\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n",
            picloud_manager_core::DEFAULT_APP_ID
        );
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'z'; 4096];
            for _ in 0..chunks {
                let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    // 8 KiB/s for 2.5 s: twice the minimum rate, well past the 1 s timeout.
    let steady = upload("steady", 10, Duration::from_millis(250)).await;
    assert!(steady.starts_with("HTTP/1.1 201 "), "{steady}");
    // 4 KiB, then nothing for 3 s: its 1 + 1 s are spent before the second chunk.
    let stalled = upload("stalled", 2, Duration::from_secs(3)).await;
    assert!(stalled.starts_with("HTTP/1.1 408 "), "{stalled}");
}

/// M7: scripts' service calls have a pool of their own. With every one of its
/// connections stuck behind a row lock, the admin API and logins still answer at once.
#[tokio::test]
async fn public_runs_holding_every_script_connection_leave_the_admin_api_working() {
    let app = spawn_app_with(&[
        ("PICLOUD_DATABASE_SCRIPT_CONNECTIONS", "2"),
        ("PICLOUD_MAX_CONCURRENT_EXECUTIONS", "8"),
    ])
    .await;
    app.create_script("hog", r#"kv::collection("hot").set("k", 1); "ok""#)
        .await;
    let put = app
        .client
        .put(app.url(&format!(
            "/api/admin/apps/{}/kv/hot/k",
            picloud_manager_core::DEFAULT_APP_ID
        )))
        .json(&json!(0))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    // Every script write to hot/k now waits for this lock, holding its connection.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM kv_entries WHERE collection = 'hot' AND key = 'k' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let hogs: Vec<_> = (0..6)
        .map(|_| {
            let request = reqwest::Client::new()
                .get(app.url("/api/run/default/hog"))
                .send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let within = Duration::from_secs(3);
    let apps = tokio::time::timeout(within, app.client.get(app.url("/api/admin/apps")).send())
        .await
        .expect("the admin API answers while scripts hold their pool")
        .unwrap();
    assert_eq!(apps.status(), StatusCode::OK);
    tokio::time::timeout(
        within,
        login(&app.anonymous, &app.base, "admin", ADMIN_PASSWORD),
    )
    .await
    .expect("logins answer while scripts hold their pool");

    lock.rollback().await.unwrap();
    for hog in hogs {
        let status = hog.await.unwrap().unwrap().status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
}
