//! `spawn_app`: the real server on port 0 against a fresh database, and a client for it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use picloud::{App, RunningServer, ServerConfig, bootstrap_admin, build_app, database, serve};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A URL to a fresh database on the test server named by `DATABASE_URL` (the server
/// creates and migrates it on first connect, as it does in production).
pub fn fresh_database_url() -> String {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL server (scripts/test sets it)");
    let mut url = reqwest::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/picloud_it_{}", uuid::Uuid::new_v4().simple()));
    url.to_string()
}

/// The password the test servers' instance admin is bootstrapped with.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client that sends the instance admin's session token with every request.
    pub client: Client,
    /// A client that sends no credentials.
    pub anonymous: Client,
    /// The database behind the server, for asserting on rows.
    pub pool: PgPool,
    /// Where the server keeps files' bytes (`PICLOUD_FILES_ROOT`), removed with it.
    pub files_root: tempfile::TempDir,
    server: RunningServer,
    app: App,
}

/// Starts the server with default settings.
pub async fn spawn_app() -> TestServer {
    spawn_app_with(&[]).await
}

/// Starts the server with extra environment settings (e.g. a small body limit).
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestServer {
    let url = fresh_database_url();
    let mut env: HashMap<String, String> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.insert("PICLOUD_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("PICLOUD_DATABASE_URL".into(), url.clone());
    let files_root = tempfile::tempdir().expect("a temporary files root");
    env.entry("PICLOUD_FILES_ROOT".into())
        .or_insert_with(|| files_root.path().display().to_string());
    let config = ServerConfig::from_env(&env).expect("test config is valid");
    let pool = database::connect_and_migrate(&url, 5)
        .await
        .expect("fresh test database");
    let app = build_app(&config, pool.clone()).expect("the server is built");
    let server = serve(config.listen, app.router.clone(), config.http)
        .await
        .expect("bind port 0");
    bootstrap_admin(
        &pool,
        server.addr,
        &config.data_dir,
        Some(ADMIN_PASSWORD.to_owned()),
    )
    .await
    .expect("bootstrap the instance admin");
    let base = format!("http://{}", server.addr);
    let anonymous = Client::new();
    let session = login(&anonymous, &base, "admin", ADMIN_PASSWORD).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {session}")).unwrap(),
    );
    let client = Client::builder().default_headers(headers).build().unwrap();
    TestServer {
        base,
        client,
        anonymous,
        pool,
        files_root,
        server,
        app,
    }
}

impl TestServer {
    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a script to the default app and returns its JSON.
    pub async fn create_script(&self, name: &str, source: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/admin/scripts"))
            .json(&json!({
                "app_id": picloud_manager_core::DEFAULT_APP_ID,
                "name": name,
                "source": source,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "creating {name}");
        response.json().await.unwrap()
    }

    /// Calls a script by id with a GET.
    pub async fn execute(&self, id: &str) -> Response {
        self.client
            .get(self.url(&format!("/api/execute/{id}")))
            .send()
            .await
            .unwrap()
    }

    /// Graceful shutdown: stop serving, then flush execution records.
    pub async fn stop(self) -> PgPool {
        self.server.shutdown().await.unwrap();
        self.app.shutdown().await;
        self.pool
    }
}

/// The execution record of a run, once the recorder has written it (polled: the test
/// watches the database, not the code under test).
pub async fn wait_for_execution(app: &TestServer, execution_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app
            .client
            .get(app.url(&format!("/api/admin/executions/{execution_id}")))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            return response.json().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "execution {execution_id} never recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in and returns the session token.
pub async fn login(client: &Client, base: &str, username: &str, password: &str) -> String {
    let response = client
        .post(format!("{base}/api/admin/auth/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "logging in as {username}"
    );
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// The envelope's error code of a JSON error response.
pub async fn error_code(response: Response) -> (StatusCode, String, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no envelope in {body}"))
        .to_owned();
    (status, code, body)
}

/// The `picloud` binary, started by a test; killed if the test ends without terminating it.
pub struct BinaryServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Every JSON log event printed up to the "serving" line.
    pub startup_events: Vec<Value>,
}

/// Starts the binary with its data directory at `data_dir` (and, without a
/// `PICLOUD_DATABASE_URL` in `settings`, a private database there) and waits until it says
/// where it listens.
pub fn start_binary(data_dir: &Path, settings: &[(&str, &str)]) -> BinaryServer {
    let mut command = Command::new(env!("CARGO_BIN_EXE_picloud"));
    command
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("PICLOUD_ADMIN_PASSWORD")
        .env("PICLOUD_DATA_DIR", data_dir)
        .env("PICLOUD_LISTEN", "127.0.0.1:0")
        .env("PICLOUD_LOG_FORMAT", "json");
    for (name, value) in settings {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picloud starts");
    let stderr = child.stderr.take().unwrap();
    let (found, startup) = mpsc::channel();
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("picloud: {line}");
            if sent {
                continue;
            }
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                let addr = event["addr"].as_str().map(str::to_owned);
                events.push(event);
                if let Some(addr) = addr {
                    found.send((addr, std::mem::take(&mut events))).unwrap();
                    sent = true;
                }
            }
        }
    });
    let (addr, startup_events) = startup
        .recv_timeout(Duration::from_secs(120))
        .expect("picloud reported its address");
    BinaryServer {
        child,
        base: format!("http://{addr}"),
        startup_events,
    }
}

impl BinaryServer {
    /// The admin password file this start announced, if it made one.
    pub fn announced_password_file(&self) -> Option<String> {
        self.startup_events
            .iter()
            .find_map(|event| event["password_file"].as_str().map(str::to_owned))
    }

    pub async fn login(&self, client: &reqwest::Client, password: &str) -> String {
        let response = client
            .post(format!("{}/api/admin/auth/login", self.base))
            .json(&json!({ "username": "admin", "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// The process id, for reading its `/proc` entry.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash or the OOM killer would: nothing gets to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        status
            .code()
            .expect("exited rather than killed by a signal")
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        // A test that failed before terminating leaves no server behind. After a
        // terminate, the child is already reaped and this does nothing.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 25 ms until it answers, failing the test after `limit` naming
/// `what` it waited for.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
