//! What `/proc` says about a process: CPU time used, resident memory and its peak,
//! children.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        // `getconf` asks sysconf without this crate needing libc; 100 is Linux's value on
        // every common architecture.
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name (which may itself contain
/// spaces and parentheses, so the split starts after the last `)`). Index 0 is field 3
/// (`state`) of proc(5).
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = raw
        .rfind(')')
        .map(|end| &raw[end + 1..])
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat format"))?;
    Ok(after_name.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) the process has used so far, all its threads included.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let fields = stat_fields(pid)?;
    // proc(5): utime is field 14 and stime field 15.
    let ticks = |field: usize| -> Result<u64> {
        fields
            .get(field - 3)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat has no field {field}"))?
            .parse::<u64>()
            .with_context(|| format!("field {field} of /proc/{pid}/stat"))
    };
    let total = ticks(14)? + ticks(15)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "tick counts of a benchmark run are far below 2^52"
    )]
    Ok(total as f64 / clock_ticks_per_second())
}

/// The process's parent id.
fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).ok()?.get(1)?.parse().ok()
}

/// A `key: value kB` line of a `/proc` status-like file, in bytes.
fn kib_field(path: &str, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("{path} has no {key} line"))
}

/// Resident set size (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Peak resident set size (`VmHWM`) since the process started or since
/// [`reset_peak_rss`], in bytes.
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// Resets the process's peak resident set size (`VmHWM`) to its current RSS
/// (`clear_refs` 5, proc(5)), so a later [`peak_rss_bytes`] is the peak from now on.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
}

/// Proportional set size (`Pss` of `smaps_rollup`), in bytes: shared pages divided among
/// the processes sharing them, so the sum over a group of processes is not inflated by
/// memory they share (PostgreSQL's shared buffers).
pub fn pss_bytes(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Every running process whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| parent_of(candidate) == Some(pid))
        .collect()
}

/// The postmaster of a running PostgreSQL cluster and its children (backends and
/// background workers), from the cluster's `postmaster.pid`.
pub fn postgres_processes(cluster_dir: &Path) -> Result<Vec<u32>> {
    let pid_file = cluster_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    let postmaster: u32 = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| anyhow!("{} does not start with a pid", pid_file.display()))?;
    let mut all = vec![postmaster];
    all.extend(children_of(postmaster));
    Ok(all)
}

/// CPU seconds used by a group of processes (those that have exited since are skipped).
pub fn group_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| cpu_seconds(pid).ok()).sum()
}

/// CPU time of each process of a group whose members come and go (PostgreSQL starts a
/// backend per connection, and a connection pool opens connections under load).
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot(HashMap<u32, f64>);

impl CpuSnapshot {
    /// The CPU seconds of each of `pids` now.
    pub fn take(pids: &[u32]) -> Self {
        Self(
            pids.iter()
                .filter_map(|&pid| Some((pid, cpu_seconds(pid).ok()?)))
                .collect(),
        )
    }

    /// The CPU seconds a group used from `self` to `later`: the growth of every process
    /// in `later`, counting a process that started in between from zero. (A process
    /// that ended in between takes its time with it; backends live as long as their
    /// connection, which outlives a measurement.)
    pub fn used_until(&self, later: &Self) -> f64 {
        // A fold from +0.0: an empty float sum is -0.0, which would print as "-0".
        later.0.iter().fold(0.0, |total, (pid, now)| {
            total + (now - self.0.get(pid).copied().unwrap_or(0.0)).max(0.0)
        })
    }
}

/// Summed PSS of a group of processes, in bytes.
pub fn group_pss_bytes(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&pid| pss_bytes(pid).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measurable() {
        let pid = std::process::id();
        let spin_until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        assert!(cpu_seconds(pid).unwrap() > 0.0);
        assert!(rss_bytes(pid).unwrap() > 1024 * 1024);
        assert!(pss_bytes(pid).unwrap() > 0);
        reset_peak_rss(pid).unwrap();
        assert!(peak_rss_bytes(pid).unwrap() > 1024 * 1024);
        assert_eq!(parent_of(pid), Some(std::os::unix::process::parent_id()));
    }
}
