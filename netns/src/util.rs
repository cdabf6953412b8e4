//! Small helpers shared by the cgroup and network modules.

use std::fs::File;
use std::io::{self, Write};

/// Identity of one [`crate::Isolation`] instance: `<prefix>-<pid>-<starttime>-<n>`.
///
/// The pid and the process start time (clock ticks since boot) together let a later
/// process tell whether the owner of a leftover is still alive, even when pids are
/// reused (for example an engine that is pid 1 in a container on every start).
#[derive(Debug, Clone)]
pub(crate) struct InstanceId {
    pub(crate) name: String,
}

impl InstanceId {
    pub(crate) fn new(prefix: &str, n: u64) -> InstanceId {
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or(0);
        InstanceId {
            name: format!("{prefix}-{pid}-{start}-{n}"),
        }
    }

    /// A short (8 hex digit) hash of the instance name, used in interface names,
    /// which the kernel limits to 15 bytes.
    pub(crate) fn short_hash(&self) -> String {
        short_hash(&self.name)
    }
}

/// FNV-1a, 32 bits, as 8 hex digits.
pub(crate) fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; field 22 is index 19.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// If `name` is `<prefix>-<pid>-<start>-<n>` (optionally followed by `-<more>`), returns
/// the instance part and whether its owning process is gone.
pub(crate) fn parse_owned(prefix: &str, name: &str) -> Option<(String, bool)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let parts: Vec<&str> = rest.split('-').collect();
    if parts.len() < 3
        || parts.len() > 4
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let pid: u32 = parts[0].parse().ok()?;
    let start: u64 = parts[1].parse().ok()?;
    let alive = process_start_time(pid) == Some(start);
    let instance = format!("{prefix}-{}-{}-{}", parts[0], parts[1], parts[2]);
    Some((instance, !alive))
}

/// The calling thread's kernel thread id.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes a decimal id to an already open cgroup file (`tasks`, `cgroup.threads`,
/// `cgroup.procs`) in a single `write(2)`, as the kernel requires.
pub(crate) fn write_id(mut file: &File, id: i64) -> io::Result<()> {
    let s = id.to_string();
    let n = file.write(s.as_bytes())?;
    if n != s.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short write to cgroup file",
        ));
    }
    Ok(())
}

/// Lists the names of the entries of `dir`, or nothing if it cannot be read.
pub(crate) fn list_dir(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_owned_recognises_own_names() {
        let id = InstanceId::new("pfx", 7);
        let (inst, stale) = parse_owned("pfx", &id.name).unwrap();
        assert_eq!(inst, id.name);
        assert!(!stale, "our own process is alive");
        let (inst2, stale2) = parse_owned("pfx", &format!("{}-3", id.name)).unwrap();
        assert_eq!(inst2, id.name);
        assert!(!stale2);
        assert!(parse_owned("pfx", "pfx-x-1-2").is_none());
        assert!(parse_owned("pfx", "pfxa-1-2-3").is_none());
        assert!(parse_owned("pfx", "other-1-2-3").is_none());
        // pid 0 never has a /proc entry: stale.
        assert!(parse_owned("pfx", "pfx-0-5-1").unwrap().1);
    }

    #[test]
    fn short_hash_is_stable_and_short() {
        assert_eq!(short_hash("a"), short_hash("a"));
        assert_ne!(short_hash("a"), short_hash("b"));
        assert_eq!(short_hash("faaslet-1-2-3").len(), 8);
    }
}
