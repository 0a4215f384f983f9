//! Zero-config database: with no database URL set, PiCloud runs a private PostgreSQL cluster
//! under its data directory, using the machine's own server binaries.
//!
//! The cluster listens only on a Unix socket inside its own directory (no TCP port, so it
//! never collides with a system server). Connections are authenticated by the peer's
//! operating-system user (`peer`, with an ident map): only the user PiCloud runs as may
//! connect, as the `picloud` superuser; nobody is trusted for being local. PostgreSQL
//! refuses to run as root, so when PiCloud runs as root the cluster belongs to, and runs
//! as, the `postgres` system user, which owns the cluster's files but is not let in
//! through the socket.
//!
//! The cluster directory is opened without following symlinks before its owner and mode
//! are set, and the access rules are written to a fresh file renamed into place, so a
//! link planted in a directory the server user owns cannot turn root's writes elsewhere.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The system user the server runs as when PiCloud runs as root.
const SERVER_USER: &str = "postgres";

/// The superuser `initdb` creates; PiCloud connects as it over the socket.
pub const SUPERUSER: &str = "picloud";

/// Where Debian-style packages put the server binaries, one folder per major version.
const DEBIAN_POSTGRES_LIB: &str = "/usr/lib/postgresql";

/// The ident map that lets PiCloud's own operating-system user in as [`SUPERUSER`].
const IDENT_MAP: &str = "picloud";

/// A socket path longer than this does not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Why the private cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPostgresError {
    /// The server binaries are not installed.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under \
         {DEBIAN_POSTGRES_LIB}/*/bin; install the server package (Debian: apt-get install \
         postgresql) or set PICLOUD_DATABASE_URL to use an existing server"
    )]
    BinariesNotFound,
    /// PiCloud runs as root but there is no unprivileged user to run the server as.
    #[error(
        "PostgreSQL refuses to run as root and there is no 'postgres' system user to run it \
         as; run PiCloud as an ordinary user or set PICLOUD_DATABASE_URL"
    )]
    NoServerUser,
    /// The socket path would be too long for the operating system.
    #[error(
        "the database socket path {path} is longer than {MAX_SOCKET_PATH} bytes; set \
         PICLOUD_DATA_DIR to a shorter path"
    )]
    SocketPathTooLong {
        /// The path that was too long.
        path: String,
    },
    /// A filesystem step failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A server command failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// Which command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
    /// The user PiCloud runs as has no name to let in by.
    #[error(
        "the user id {uid} PiCloud runs as has no name in /etc/passwd, so the private \
         database cannot let it in by name; run PiCloud as a named user or set \
         PICLOUD_DATABASE_URL"
    )]
    NoUserName {
        /// The effective user id.
        uid: u32,
    },
    /// The server user cannot reach the cluster directory.
    #[error(
        "the 'postgres' system user cannot reach {path} (a parent directory is not \
         traversable by other users); set PICLOUD_DATA_DIR to a directory such as \
         /var/lib/picloud"
    )]
    Unreachable {
        /// The cluster directory.
        path: String,
    },
}

type Result<T> = std::result::Result<T, EmbeddedPostgresError>;

/// The system user the server runs as when PiCloud runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

/// The private cluster's server settings, chosen for a 1–4 GiB box: small shared
/// buffers and per-query memory, no parallel workers and no logical replication launcher
/// (each is a process of its own), WAL kept small, durability untouched (`fsync` and `synchronous_commit` stay on). Each is
/// a `-c name=value` at start, so an operator's own (`PICLOUD_POSTGRES_SETTINGS`), given
/// later, wins.
pub const PI_SETTINGS: &[(&str, &str)] = &[
    ("shared_buffers", "16MB"),
    ("work_mem", "2MB"),
    ("maintenance_work_mem", "16MB"),
    ("effective_cache_size", "256MB"),
    ("max_wal_size", "256MB"),
    ("min_wal_size", "32MB"),
    ("max_worker_processes", "2"),
    ("max_parallel_workers", "0"),
    ("max_parallel_workers_per_gather", "0"),
    ("autovacuum_max_workers", "2"),
    ("max_logical_replication_workers", "0"),
];

/// How the private cluster's server is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTuning {
    /// Connections the server accepts: PiCloud's two pools, the superuser reserve and a
    /// little room for an operator's `psql`.
    pub max_connections: u32,
    /// Settings given after [`PI_SETTINGS`], which win over them.
    pub overrides: Vec<(String, String)>,
}

impl PostgresTuning {
    /// Room beyond the pools: PostgreSQL's 3 reserved superuser connections (PiCloud
    /// connects as the superuser) and some for an operator's tools (`psql`, a backup, the
    /// benchmark harness's own pool of 16). An unused slot costs a few kilobytes of
    /// shared memory, not a process.
    pub const SPARE_CONNECTIONS: u32 = 24;

    /// Enough connections for pools of `pool` and `script_pool` connections.
    pub fn for_pools(pool: u32, script_pool: u32, overrides: Vec<(String, String)>) -> Self {
        Self {
            max_connections: pool + script_pool + Self::SPARE_CONNECTIONS,
            overrides,
        }
    }

    /// The `-c` options of every setting, in order.
    fn options(&self) -> String {
        let max_connections = self.max_connections.to_string();
        PI_SETTINGS
            .iter()
            .map(|(name, value)| (*name, *value))
            .chain([("max_connections", max_connections.as_str())])
            .chain(
                self.overrides
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .map(|(name, value)| format!(" -c {name}={value}"))
            .collect()
    }
}

impl Default for PostgresTuning {
    /// For the default pools (10 and 6 connections).
    fn default() -> Self {
        Self::for_pools(10, 6, Vec::new())
    }
}

/// Parses `PICLOUD_POSTGRES_SETTINGS`: `name=value` pairs separated by commas or spaces,
/// names of letters, digits, `_` and `.`, values of letters, digits and `_ . -` (enough for
/// `128MB`, `on`, `0.9`; nothing a shell would read differently, since `pg_ctl` hands
/// the options to one).
pub fn parse_settings(raw: &str) -> std::result::Result<Vec<(String, String)>, String> {
    raw.split([',', ' '])
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("'{pair}' is not name=value"))?;
            let name_ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b));
            let value_ok = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok || !value_ok {
                return Err(format!(
                    "'{pair}': names are letters, digits, '_' and '.', values letters, digits, '_', '.' and '-'"
                ));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A private PostgreSQL cluster under PiCloud's data directory.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<ServerUser>,
    /// The operating-system user PiCloud runs as, the one the socket lets in.
    client_user: String,
    started_here: bool,
    tuning: PostgresTuning,
}

impl EmbeddedPostgres {
    /// Initialises the cluster under `data_dir/postgres` on first use, then starts it unless
    /// it is already running (a second start reuses both the data and a running server).
    pub fn start(data_dir: &Path) -> Result<Self> {
        Self::start_tuned(data_dir, PostgresTuning::default())
    }

    /// As [`Self::start`], with the server sized by `tuning`.
    pub fn start_tuned(data_dir: &Path, tuning: PostgresTuning) -> Result<Self> {
        Self::start_with(data_dir, &default_search_path(), tuning)
    }

    /// As [`Self::start`], looking for binaries only in `search_path` (tests use this).
    pub fn start_with_search_path(data_dir: &Path, search_path: &[PathBuf]) -> Result<Self> {
        Self::start_with(data_dir, search_path, PostgresTuning::default())
    }

    fn start_with(
        data_dir: &Path,
        search_path: &[PathBuf],
        tuning: PostgresTuning,
    ) -> Result<Self> {
        let bin_dir = find_binaries(search_path).ok_or(EmbeddedPostgresError::BinariesNotFound)?;
        let run_as = if running_as_root() {
            Some(postgres_system_user().ok_or(EmbeddedPostgresError::NoServerUser)?)
        } else {
            None
        };
        let cluster_dir = data_dir.join("postgres");
        let socket = cluster_dir.join(".s.PGSQL.5432");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(EmbeddedPostgresError::SocketPathTooLong {
                path: socket.display().to_string(),
            });
        }

        let uid = effective_uid();
        let client_user = user_name(uid).ok_or(EmbeddedPostgresError::NoUserName { uid })?;
        let mut cluster = Self {
            cluster_dir,
            bin_dir,
            run_as,
            client_user,
            started_here: false,
            tuning,
        };
        cluster.prepare_directories(data_dir)?;
        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.cluster_dir.display(), "initialising a private postgresql cluster");
            cluster.init()?;
        }
        // Written on every start, so a cluster made with older, laxer rules is tightened.
        cluster.write_access_rules()?;
        if cluster.is_running() {
            // A running server rereads its rules on reload.
            let dir = cluster.cluster_dir.display().to_string();
            cluster.run_checked("pg_ctl", ["reload", "-D", dir.as_str()])?;
            tracing::info!(dir = %cluster.cluster_dir.display(), "reusing the running private postgresql");
        } else {
            cluster.launch()?;
            cluster.started_here = true;
            tracing::info!(dir = %cluster.cluster_dir.display(), "private postgresql started");
        }
        Ok(cluster)
    }

    /// A connection URL for `database` over the cluster's socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@localhost/{database}?host={}",
            self.cluster_dir.display()
        )
    }

    /// Whether this process started the server (and so stops it at shutdown).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the server if this process started it. Fast mode: open sessions are ended and
    /// the server shuts down cleanly, which is what a graceful PiCloud shutdown wants.
    pub fn stop(&self) -> Result<()> {
        if !self.started_here {
            return Ok(());
        }
        let dir = self.cluster_dir.display().to_string();
        self.run_checked(
            "pg_ctl",
            ["stop", "-D", dir.as_str(), "-m", "fast", "-w", "-t", "60"],
        )?;
        tracing::info!(dir = %dir, "private postgresql stopped");
        Ok(())
    }

    fn prepare_directories(&self, data_dir: &Path) -> Result<()> {
        create_dir(data_dir)?;
        create_dir(&self.cluster_dir)?;
        // Opened without following a symlink: owner and mode are then set on the directory
        // itself, whatever its path comes to name meanwhile.
        let cluster = open_dir_no_follow(&self.cluster_dir)?;
        if let Some(user) = self.run_as {
            // The server user must traverse the data directory (not list it) to reach its
            // cluster, which only it may read.
            set_mode(data_dir, 0o711)?;
            std::os::unix::fs::fchown(&cluster, Some(user.uid), Some(user.gid)).map_err(
                |source| EmbeddedPostgresError::Io {
                    action: "could not hand the cluster directory to the postgres user:",
                    path: self.cluster_dir.display().to_string(),
                    source,
                },
            )?;
            let reachable = self
                .command_as_server_user("test")
                .arg("-w")
                .arg(&self.cluster_dir)
                .status()
                .is_ok_and(|s| s.success());
            if !reachable {
                return Err(EmbeddedPostgresError::Unreachable {
                    path: self.cluster_dir.display().to_string(),
                });
            }
        }
        cluster
            .set_permissions(std::fs::Permissions::from_mode(0o700))
            .map_err(|source| EmbeddedPostgresError::Io {
                action: "could not set permissions on",
                path: self.cluster_dir.display().to_string(),
                source,
            })
    }

    /// Lets in the user PiCloud runs as, by the peer's operating-system identity, and no
    /// one else: `pg_hba.conf` allows only local socket connections through the ident
    /// map, and `pg_ident.conf` maps exactly that user to the superuser.
    fn write_access_rules(&self) -> Result<()> {
        self.write_cluster_file(
            "pg_hba.conf",
            &format!(
                "# Written by PiCloud at every start: only PiCloud's own user, over the socket.\n\
                 local all all peer map={IDENT_MAP}\n"
            ),
        )?;
        self.write_cluster_file(
            "pg_ident.conf",
            &format!(
                "# Written by PiCloud at every start.\n{IDENT_MAP} {} {SUPERUSER}\n",
                self.client_user
            ),
        )
    }

    /// Replaces `name` in the cluster directory: a fresh file (created exclusively, which
    /// never follows a symlink) handed to the server user, then renamed over the old one
    /// (which replaces a symlink rather than writing through it).
    fn write_cluster_file(&self, name: &str, contents: &str) -> Result<()> {
        let path = self.cluster_dir.join(name);
        let fresh = self.cluster_dir.join(format!("{name}.picloud-new"));
        let io = |action: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| EmbeddedPostgresError::Io {
                action,
                path,
                source,
            }
        };
        match std::fs::remove_file(&fresh) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("could not remove", &fresh)(err));
            }
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&fresh)
            .map_err(io("could not create", &fresh))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("could not write", &fresh))?;
        if let Some(user) = self.run_as {
            std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid))
                .map_err(io("could not hand to the postgres user", &fresh))?;
        }
        std::fs::rename(&fresh, &path).map_err(io("could not replace", &path))
    }

    fn init(&self) -> Result<()> {
        let dir = self.cluster_dir.display().to_string();
        self.run_checked(
            "initdb",
            [
                "-D",
                dir.as_str(),
                "-U",
                SUPERUSER,
                // Replaced by the ident-mapped rules before the server first starts.
                "--auth-local=peer",
                "--auth-host=reject",
                "--encoding=UTF8",
                "--no-locale",
            ],
        )
        .map(drop)
    }

    fn is_running(&self) -> bool {
        let dir = self.cluster_dir.display().to_string();
        self.run("pg_ctl", ["status", "-D", dir.as_str()])
            .is_ok_and(|out| out.status.success())
    }

    fn launch(&self) -> Result<()> {
        let dir = self.cluster_dir.display().to_string();
        let log = self.cluster_dir.join("server.log").display().to_string();
        // No TCP listener: the socket in the cluster directory is the only way in.
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{dir}' \
             -c unix_socket_permissions=0700{}",
            self.tuning.options()
        );
        self.run_checked(
            "pg_ctl",
            [
                "start",
                "-D",
                dir.as_str(),
                "-l",
                log.as_str(),
                "-w",
                "-t",
                "60",
                "-o",
                options.as_str(),
            ],
        )
        .map(drop)
    }

    fn command_as_server_user(&self, program: impl AsRef<OsStr>) -> Command {
        match self.run_as {
            // runuser sets the user, its group and its supplementary groups (dropping
            // root's), which a bare setuid from here cannot do on stable Rust.
            Some(_) => {
                let mut command = Command::new("runuser");
                command
                    .args(["-u", SERVER_USER, "--"])
                    .arg(program)
                    .current_dir("/");
                command
            }
            None => Command::new(program),
        }
    }

    fn run<'a>(
        &self,
        tool: &str,
        args: impl IntoIterator<Item = &'a str>,
    ) -> std::io::Result<Output> {
        self.command_as_server_user(self.bin_dir.join(tool))
            .args(args)
            .output()
    }

    fn run_checked<'a>(
        &self,
        tool: &str,
        args: impl IntoIterator<Item = &'a str>,
    ) -> Result<Output> {
        let output = self
            .run(tool, args)
            .map_err(|source| EmbeddedPostgresError::Io {
                action: "could not run",
                path: self.bin_dir.join(tool).display().to_string(),
                source,
            })?;
        if output.status.success() {
            return Ok(output);
        }
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        Err(EmbeddedPostgresError::Command {
            command: tool.to_owned(),
            status: output.status.to_string(),
            output: text,
        })
    }
}

/// PATH first, then every `/usr/lib/postgresql/<major>/bin`, newest major first.
pub fn default_search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_POSTGRES_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs
}

/// The first directory holding both `initdb` and `pg_ctl`.
pub fn find_binaries(search_path: &[PathBuf]) -> Option<PathBuf> {
    search_path
        .iter()
        .find(|dir| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl")))
        .map(|dir| {
            // A PATH entry is often a symlink farm (/usr/local/bin); the real folder also
            // holds `postgres`, which pg_ctl looks for next to itself.
            std::fs::canonicalize(dir.join("pg_ctl"))
                .ok()
                .and_then(|real| real.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| dir.clone())
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    effective_uid() == 0
}

/// The process's effective user id: the owner of `/proc/self`, which answers without an
/// unsafe `geteuid` call.
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| std::os::unix::fs::MetadataExt::uid(&m))
}

/// The name of user `uid` in `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    passwd_entries()?
        .into_iter()
        .find_map(|(name, entry_uid, _)| (entry_uid == uid).then_some(name))
}

/// `(name, uid, gid)` of every well-formed line of `/etc/passwd`.
fn passwd_entries() -> Option<Vec<(String, u32, u32)>> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    Some(
        passwd
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let _password = fields.next()?;
                let uid = fields.next()?.parse().ok()?;
                let gid = fields.next()?.parse().ok()?;
                Some((name.to_owned(), uid, gid))
            })
            .collect(),
    )
}

/// Opens a directory for its metadata, refusing a symlink (`O_NOFOLLOW`).
fn open_dir_no_follow(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(|source| EmbeddedPostgresError::Io {
            action: "could not open (a symlink is refused)",
            path: path.display().to_string(),
            source,
        })
}

/// The `postgres` user's ids from `/etc/passwd`.
fn postgres_system_user() -> Option<ServerUser> {
    passwd_entries()?
        .into_iter()
        .find_map(|(name, uid, gid)| (name == SERVER_USER).then_some(ServerUser { uid, gid }))
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|source| EmbeddedPostgresError::Io {
        action: "could not create",
        path: path.display().to_string(),
        source,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        EmbeddedPostgresError::Io {
            action: "could not set permissions on",
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pools_size_the_server_and_an_operator_has_the_last_word() {
        let overrides = parse_settings("shared_buffers=128MB").unwrap();
        let tuning = PostgresTuning::for_pools(10, 6, overrides);
        assert_eq!(tuning.max_connections, 40);
        let options = tuning.options();
        assert!(options.starts_with(" -c shared_buffers=16MB"), "{options}");
        assert!(options.contains(" -c max_connections=40"), "{options}");
        assert!(options.ends_with(" -c shared_buffers=128MB"), "{options}");
    }

    #[test]
    fn settings_are_refused_unless_plain() {
        assert_eq!(
            parse_settings("work_mem=4MB, jit=off").unwrap(),
            [
                ("work_mem".to_owned(), "4MB".to_owned()),
                ("jit".to_owned(), "off".to_owned())
            ]
        );
        assert_eq!(parse_settings("").unwrap(), []);
        for bad in ["work_mem", "a=b;rm", "a='x'", "=1", "a=$(id)"] {
            assert!(parse_settings(bad).is_err(), "{bad}");
        }
    }
}
