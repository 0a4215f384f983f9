//! The `picloud` binary as a user runs it: zero-config start with a private PostgreSQL,
//! a second start that reuses it, and a clean exit on SIGTERM.
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

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use picloud::embedded_postgres::{EmbeddedPostgres, EmbeddedPostgresError};
use serde_json::{Value, json};
use support::{BinaryServer, start_binary};

/// Starts the binary zero-config: a private database under `data_dir`.
fn start(data_dir: &Path) -> BinaryServer {
    start_binary(data_dir, &[])
}

#[tokio::test]
async fn zero_config_start_reuses_its_database_and_exits_cleanly_on_sigterm() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    let first = start(data_dir.path());
    let ready = client
        .get(format!("{}/readyz", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let password_file = first
        .announced_password_file()
        .expect("the first start says where the generated admin password is");
    assert_eq!(
        Path::new(&password_file),
        data_dir.path().join("admin-password")
    );
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner can read the password");
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_owned();
    let bootstrap_line = first
        .startup_events
        .iter()
        .find(|event| event["password_file"].is_string())
        .unwrap();
    assert!(
        bootstrap_line["message"]
            .as_str()
            .unwrap()
            .contains("/api/admin/auth/login"),
        "the log says how to log in: {bootstrap_line}"
    );
    for event in &first.startup_events {
        assert!(
            !event.to_string().contains(&password),
            "the password is never logged: {event}"
        );
    }
    let session = first.login(&client, &password).await;
    let anonymous = client
        .post(format!("{}/api/admin/scripts", first.base))
        .json(&json!({ "app_id": picloud_manager_core::DEFAULT_APP_ID, "name": "nope", "source": "1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the admin API needs a credential");
    let created: Value = client
        .post(format!("{}/api/admin/scripts", first.base))
        .bearer_auth(&session)
        .json(&json!({ "app_id": picloud_manager_core::DEFAULT_APP_ID, "name": "hello", "source": "\"hello from the pi\"" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let answer = client
        .get(format!("{}/api/execute/{id}", first.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(answer, "hello from the pi");
    assert_private_database_lets_in_only_picloud(data_dir.path());
    assert_eq!(first.terminate(), 0);
    assert!(
        !data_dir.path().join("postgres/postmaster.pid").exists(),
        "the private server was stopped with picloud"
    );

    let second = start(data_dir.path());
    assert_eq!(
        second.announced_password_file(),
        None,
        "no second admin, no second password"
    );
    assert!(
        !data_dir.path().join("admin-password.new").exists(),
        "the unused second password left nothing behind"
    );
    second.login(&client, &password).await;
    let answer = client
        .get(format!("{}/api/run/default/hello", second.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        answer, "hello from the pi",
        "the second start kept the data"
    );
    assert_eq!(second.terminate(), 0);
}

/// M11: the private cluster trusts no one for being local. Its rules let in PiCloud's own
/// user by peer identity only, so the `postgres` system user (which owns the files when
/// PiCloud runs as root) cannot connect as the superuser through the socket.
fn assert_private_database_lets_in_only_picloud(data_dir: &Path) {
    let cluster = data_dir.join("postgres");
    let rules = std::fs::read_to_string(cluster.join("pg_hba.conf")).unwrap();
    assert!(!rules.contains("trust"), "{rules}");
    assert!(rules.contains("local all all peer map=picloud"), "{rules}");
    if !picloud::embedded_postgres::running_as_root() {
        return;
    }
    let psql = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-h"])
        .arg(&cluster)
        .args(["-U", "picloud", "-d", "picloud", "-c", "select 1"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&psql.stderr);
    assert!(!psql.status.success(), "the postgres user got in: {said}");
    assert!(said.contains("authentication failed"), "{said}");
}

#[test]
fn a_symlink_in_place_of_the_cluster_directory_is_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), data_dir.path().join("postgres")).unwrap();
    let err = EmbeddedPostgres::start(data_dir.path()).unwrap_err();
    assert!(
        matches!(err, EmbeddedPostgresError::Io { .. }) && err.to_string().contains("symlink"),
        "{err}"
    );
    let mode = std::fs::metadata(elsewhere.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the link's target was left alone");
}

#[test]
fn missing_server_binaries_name_the_package_and_the_alternative() {
    let data_dir = tempfile::tempdir().unwrap();
    let err = EmbeddedPostgres::start_with_search_path(data_dir.path(), &[]).unwrap_err();
    assert!(matches!(err, EmbeddedPostgresError::BinariesNotFound));
    let message = err.to_string();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains("PICLOUD_DATABASE_URL"), "{message}");
}

#[test]
fn a_bad_setting_stops_the_binary_with_the_variable_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_picloud"))
        .env("PICLOUD_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PICLOUD_LISTEN"), "{stderr}");
}
