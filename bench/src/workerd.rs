//! workerd, Cloudflare's Workers runtime, as a peer server: the `workerd` npm package
//! pinned in `bench/workerd/package.json` (installed by `bench/run` under
//! `target/bench/workerd`, never by the harness itself) serving `bench/workerd/hello.js`,
//! which answers `hello` like the baselines. The platform package's binary is run
//! directly, so the process whose CPU time and memory are read is workerd itself, not a
//! node wrapper. When it is not installed or does not start, it is skipped with the
//! reason; it never fails the run.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::baseline::PATH;
use crate::http::{self, Call};
use crate::load::round2;
use crate::picloud::free_port;
use crate::{Options, ServerResult, measure_server, procfs};

/// The server's name in the report.
pub const NAME: &str = "workerd";

/// The package that pins the version.
const PACKAGE_JSON: &str = include_str!("../workerd/package.json");
/// The worker.
const HELLO_JS: &str = include_str!("../workerd/hello.js");
/// workerd's config; its socket's address is overridden on the command line.
const CONFIG_CAPNP: &str = include_str!("../workerd/config.capnp");

/// What every answer's body must be.
const HELLO: &[u8] = b"hello";

/// Longest a start may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(10);

/// One MiB, for reporting memory.
const MIB: f64 = 1024.0 * 1024.0;

/// The workerd binary found, with its versions.
#[derive(Debug, Clone)]
pub struct Located {
    /// The platform binary.
    pub binary: PathBuf,
    /// The npm package's version (`None` for a binary given with `--workerd`).
    pub package_version: Option<String>,
    /// What `workerd --version` says.
    pub version: String,
}

/// What was measured of workerd: its load results and the `workerd` section of the JSON.
#[derive(Debug, Clone)]
pub struct Measured {
    /// One connection, then many.
    pub server: ServerResult,
    /// Version, binary and memory.
    pub details: Value,
}

/// The workerd version `bench/workerd/package.json` pins.
fn pinned_version() -> Option<String> {
    let package: Value = serde_json::from_str(PACKAGE_JSON).ok()?;
    package["dependencies"]["workerd"]
        .as_str()
        .map(str::to_owned)
}

/// The npm package holding this platform's binary.
fn platform_package() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("workerd-linux-64"),
        ("linux", "aarch64") => Some("workerd-linux-arm64"),
        _ => None,
    }
}

/// Where `bench/run` installs the package: `bench/workerd` in the target directory, the
/// one two levels above this executable (`target/release/picloud-bench`).
fn install_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the harness executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(|target| target.join("bench").join("workerd"))
        .ok_or_else(|| anyhow!("no target directory above {}", exe.display()))
}

/// Whether `path` starts like an ELF executable (and not like a script, such as the node
/// wrapper the `workerd` package's `bin/workerd` is until its install script replaces it).
fn is_elf(path: &Path) -> bool {
    let mut magic = [0_u8; 4];
    let read = File::open(path).and_then(|mut file| file.read_exact(&mut magic));
    read.is_ok() && magic == *b"\x7fELF"
}

/// The workerd binary to measure: `--workerd`, else the platform binary of the package
/// `bench/run` installed, if it is the pinned version. `Err` is why there is none.
pub fn locate(explicit: Option<&Path>) -> Result<Located, String> {
    let (binary, package_version) = match explicit {
        Some(path) => (path.to_path_buf(), None),
        None => {
            let dir = install_dir().map_err(|err| format!("{err:#}"))?;
            let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
            let package = platform_package()
                .ok_or_else(|| format!("the workerd npm package has no build for {os}-{arch}"))?;
            let package_dir = dir.join("node_modules").join("@cloudflare").join(package);
            let binary = package_dir.join("bin").join("workerd");
            if !binary.is_file() {
                // `bench/run` leaves a line there when npm is missing or `npm ci` failed.
                let why = std::fs::read_to_string(dir.join("install-error")).map_or_else(
                    |_| "bench/run installs it with npm".to_owned(),
                    |text| text.trim().to_owned(),
                );
                return Err(format!("not installed (no {}): {why}", binary.display()));
            }
            let installed = std::fs::read_to_string(package_dir.join("package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|package| package["version"].as_str().map(str::to_owned));
            let pinned = pinned_version();
            if installed != pinned {
                return Err(format!(
                    "{} holds workerd {}, bench/workerd/package.json pins {} (bench/run \
                     installs the pinned one)",
                    dir.display(),
                    installed.as_deref().unwrap_or("of unknown version"),
                    pinned.as_deref().unwrap_or("none"),
                ));
            }
            (binary, installed)
        }
    };
    if !binary.is_file() {
        return Err(format!("no workerd binary at {}", binary.display()));
    }
    if !is_elf(&binary) {
        return Err(format!(
            "{} is not the platform binary (a wrapper script?): pass \
             node_modules/@cloudflare/workerd-<platform>/bin/workerd",
            binary.display()
        ));
    }
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|err| format!("running {} --version: {err}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(Located {
        binary,
        package_version,
        version: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    })
}

/// A running workerd process.
#[derive(Debug)]
pub struct Workerd {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    // Holds the config, the worker and the log; removed after the process is stopped
    // (`Drop` runs before the fields are dropped).
    dir: tempfile::TempDir,
}

impl Workerd {
    /// Starts `binary` serving the hello worker on a free loopback port, and waits until
    /// it answers `hello` on [`PATH`].
    pub async fn start(binary: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("picloud-bench-workerd.")
            .tempdir()
            .context("creating workerd's directory")?;
        let config = dir.path().join("config.capnp");
        std::fs::write(&config, CONFIG_CAPNP).context("writing workerd's config")?;
        std::fs::write(dir.path().join("hello.js"), HELLO_JS)
            .context("writing workerd's worker")?;
        let log =
            File::create(dir.path().join("workerd.log")).context("creating workerd's log file")?;
        let addr = free_port()?;
        let child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .arg("--socket-addr")
            .arg(format!("http={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self {
            child: Some(child),
            addr,
            dir,
        };
        if let Err(err) = server.wait_ready().await {
            let _ = server.stop();
            let log = server.log_tail();
            if log.is_empty() {
                return Err(err);
            }
            return Err(anyhow!("{err:#}; workerd's log: {log}"));
        }
        Ok(server)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Polls [`PATH`] until it answers 200 `hello`.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let call = Call::get(PATH);
        let mut last_answer = None;
        loop {
            if let Ok((status, body)) = http::once(self.addr, &call).await {
                if status == StatusCode::OK && body.as_ref() == HELLO {
                    return Ok(());
                }
                last_answer = Some(format!("{status} {:?}", String::from_utf8_lossy(&body)));
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("workerd exited during start-up ({status})");
            }
            if Instant::now() >= deadline {
                bail!(
                    "workerd did not answer 200 {:?} on {PATH} within {START_TIMEOUT:?} (last \
                     answer: {})",
                    String::from_utf8_lossy(HELLO),
                    last_answer.as_deref().unwrap_or("none")
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The last lines workerd wrote to its standard error, on one line.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("workerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Kills the process (by its pid) and reaps it.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        // A harness that fails half-way must not leave the server running.
        let _ = self.stop();
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "memory sizes are far below 2^52"
)]
fn mib(bytes: u64) -> f64 {
    round2(bytes as f64 / MIB)
}

/// Finds, starts and loads workerd like a baseline (one connection, then
/// `--connections`), reading its RSS after start-up and right after the load, then stops
/// it. `Err` is why it was skipped.
pub async fn measure(options: &Options) -> Result<Measured, String> {
    let located = locate(options.workerd.as_deref())?;
    let mut server = Workerd::start(&located.binary)
        .await
        .map_err(|err| format!("{err:#}"))?;
    let pid = server.pid();
    let rss_after_start = procfs::rss_bytes(pid);
    let measured = measure_server(options, NAME, server.addr, &Call::get(PATH), &[pid], None).await;
    let rss_after_load = procfs::rss_bytes(pid);
    if let Err(err) = server.stop() {
        eprintln!("picloud-bench: stopping workerd: {err:#}");
    }
    let measured = measured.map_err(|err| format!("{err:#}"))?;
    let rss_after_load = rss_after_load.map_err(|err| format!("{err:#}"))?;
    Ok(Measured {
        server: measured,
        details: json!({
            "version": located.version,
            "npm_package_version": located.package_version,
            "binary": located.binary.display().to_string(),
            "rss_mib_after_start": rss_after_start.ok().map(mib),
            "rss_mib_right_after_load": mib(rss_after_load),
        }),
    })
}
