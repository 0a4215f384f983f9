//! The `picloud` binary under test: started zero-config with its own PostgreSQL under a
//! temporary data directory, driven over its admin API, stopped with SIGTERM.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper::StatusCode;
use serde_json::json;

use crate::http::{self, Call};

/// The admin password the harness gives the first start.
pub const ADMIN_PASSWORD: &str = "bench-admin-password-0123456789";

/// How often readiness is polled while start-up is timed.
const READY_POLL: Duration = Duration::from_millis(2);

/// Longest a start may take (the first one runs `initdb`).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start `picloud`.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The binary.
    pub binary: PathBuf,
    /// `PICLOUD_DATA_DIR`: the private PostgreSQL lives under it.
    pub data_dir: PathBuf,
}

/// A running `picloud` process.
#[derive(Debug)]
pub struct Picloud {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    exec_at: Instant,
}

impl Launcher {
    /// The private cluster's directory (holds `postmaster.pid`).
    pub fn cluster_dir(&self) -> PathBuf {
        self.data_dir.join("postgres")
    }

    /// Starts `picloud` on a free loopback port; it logs to `picloud.log` in the data dir.
    /// `env` is added to the environment (the rest is inherited).
    pub fn spawn(&self, env: &[(&str, &str)]) -> Result<Picloud> {
        let addr = free_port()?;
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the picloud log file")?;
        let exec_at = Instant::now();
        let child = Command::new(&self.binary)
            .env_remove("PICLOUD_DATABASE_URL")
            .env_remove("PICLOUD_FILES_ROOT")
            .env("PICLOUD_DATA_DIR", &self.data_dir)
            .env("PICLOUD_LISTEN", addr.to_string())
            .env("PICLOUD_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        Ok(Picloud {
            child: Some(child),
            addr,
            exec_at,
        })
    }

    /// Where its files' bytes live: the default under the data directory (the harness
    /// clears `PICLOUD_FILES_ROOT`), so the files step's raw baseline shares its disk.
    pub fn files_dir(&self) -> PathBuf {
        self.data_dir.join("files")
    }

    /// Where the processes started by this launcher log.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("picloud.log")
    }

    /// Starts `picloud` and waits until `/readyz` answers 200; returns it with the time
    /// from exec to that answer.
    pub async fn start_ready(&self) -> Result<(Picloud, Duration)> {
        self.start_ready_with(&[]).await
    }

    /// As [`Self::start_ready`], with `env` added to the environment.
    pub async fn start_ready_with(&self, env: &[(&str, &str)]) -> Result<(Picloud, Duration)> {
        let mut picloud = self.spawn(env)?;
        match picloud.wait_ready().await {
            Ok(elapsed) => Ok((picloud, elapsed)),
            Err(err) => {
                let _ = picloud.stop();
                Err(err.context(format!("see {}", self.log_path().display())))
            }
        }
    }
}

impl Picloud {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Polls `/readyz` until it answers 200; the time since exec.
    pub async fn wait_ready(&mut self) -> Result<Duration> {
        let deadline = Instant::now() + START_TIMEOUT;
        let call = Call::get("/readyz");
        loop {
            if let Ok((StatusCode::OK, _)) = http::once(self.addr, &call).await {
                return Ok(self.exec_at.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("picloud exited during start-up ({status})");
            }
            if Instant::now() >= deadline {
                bail!("picloud was not ready within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (killing it past [`STOP_TIMEOUT`]).
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|status| status.success());
        if signalled {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    if status.success() {
                        return Ok(());
                    }
                    bail!("picloud exited with {status} on SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        child.kill()?;
        child.wait()?;
        Err(anyhow!("picloud did not stop on SIGTERM and was killed"))
    }
}

impl Drop for Picloud {
    fn drop(&mut self) {
        // A harness that fails half-way must not leave servers (and their PostgreSQL)
        // running.
        let _ = self.stop();
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// Logs in as the instance admin; the session token.
pub async fn login(addr: SocketAddr) -> Result<String> {
    let body = json!({ "username": "admin", "password": ADMIN_PASSWORD }).to_string();
    let answer = http::json(
        addr,
        &Call::post_json("/api/admin/auth/login", body),
        StatusCode::OK,
    )
    .await?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("login answer has no token: {answer}"))
}

/// Creates a script in the default app; its id.
pub async fn create_script(
    addr: SocketAddr,
    token: &str,
    name: &str,
    source: &str,
) -> Result<String> {
    let body =
        json!({ "app_id": picloud_manager_core::DEFAULT_APP_ID, "name": name, "source": source })
            .to_string();
    let answer = http::json(
        addr,
        &Call::post_json("/api/admin/scripts", body).bearer(token),
        StatusCode::CREATED,
    )
    .await?;
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("create answer has no id: {answer}"))
}

/// The `picloud` binary to measure: `--picloud`, else the one next to this executable
/// (`target/release/picloud` when the harness runs from `target/release`).
pub fn locate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let candidate = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the harness executable")?
            .with_file_name("picloud"),
    };
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(anyhow!(
            "no picloud binary at {} (build it with `cargo build --release -p picloud`, or \
             pass --picloud <path>)",
            candidate.display()
        ))
    }
}
