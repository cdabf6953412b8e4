//! Cgroup managers for cgroup v1 and cgroup v2, side by side.
//!
//! Both implement [`CgroupManager`]. A manager owns one *base* cgroup per controller,
//! named after the [`crate::Isolation`] instance (`<prefix>-<pid>-<starttime>-<n>`), and
//! creates one child per function below it.
//!
//! # Thread granularity
//!
//! Faaslets are threads of one process, so threads (not only processes) must join a
//! function's cgroup:
//!
//! * **v1**: every controller hierarchy has a `tasks` file that takes thread ids.
//!   Threads join `cpu` (for `cpu.shares`, `cpu.cfs_quota_us`) and `pids`. They do
//!   **not** join `memory`: v1 charges memory to the cgroup of the address space's owner
//!   (`mm->owner`), so a per-thread memory cgroup would not limit anything.
//!   `memory.limit_in_bytes` is still written and applies to processes added with
//!   [`crate::FunctionCgroup::add_process`].
//! * **v2**: threads of one process may sit in different cgroups only inside a
//!   *threaded subtree*. The manager creates its base below the process's own cgroup
//!   (which becomes the threaded domain) with `cgroup.type = threaded`, and every function
//!   cgroup is threaded too; threads join through `cgroup.threads`. Only threaded
//!   controllers work there: `cpu` and `pids` do, `memory` does not, so `memory.max`
//!   is reported as not applicable and processes cannot be added.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::util;
use crate::Degradation;

/// Errors from cgroup operations.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found.
    #[error("no usable cgroup hierarchy: {0}")]
    Unavailable(String),
    /// A filesystem operation on a cgroup file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted (`mkdir`, `write`, ...).
        op: &'static str,
        /// The cgroup path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A limit is out of range.
    #[error("invalid cgroup limit: {0}")]
    InvalidLimit(String),
    /// The operation is not possible with this cgroup version.
    #[error("not supported by cgroup {version}: {what}")]
    Unsupported {
        /// The cgroup version in use.
        version: CgroupVersion,
        /// What is not supported.
        what: &'static str,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup version a manager drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies (`/sys/fs/cgroup/<controller>`).
    V1,
    /// The unified hierarchy.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// Resource limits for one function's cgroup. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// CPU weight in cgroup v2 units: 1..=10000, default 100. On v1 it becomes
    /// `cpu.shares = weight * 1024 / 100` (so 100 is the v1 default of 1024).
    pub cpu_weight: Option<u64>,
    /// CPU bandwidth cap as `(quota_us, period_us)`: at most `quota_us` of CPU time per
    /// `period_us`. v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
    pub cpu_max: Option<(u64, u64)>,
    /// Memory limit in bytes. v2 `memory.max`, v1 `memory.limit_in_bytes`.
    /// Applies to processes only (see the module docs).
    pub memory_max: Option<u64>,
    /// Maximum number of tasks. `pids.max` on both versions.
    pub pids_max: Option<u64>,
}

impl CgroupLimits {
    /// Checks that every limit is in range.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu_weight {w} not in 1..=10000"
                )));
            }
        }
        if let Some((q, p)) = self.cpu_max {
            if !(1_000..=1_000_000).contains(&p) || q < 1_000 {
                return Err(CgroupError::InvalidLimit(format!(
                    "cpu_max ({q}, {p}): period must be 1000..=1000000 us and quota >= 1000 us"
                )));
            }
        }
        Ok(())
    }

    fn wants_cpu(&self) -> bool {
        self.cpu_weight.is_some() || self.cpu_max.is_some()
    }

    /// v1 `cpu.shares` for a v2 weight.
    pub fn weight_to_shares(weight: u64) -> u64 {
        (weight * 1024 / 100).clamp(2, 262_144)
    }
}

/// The files through which a thread joins a function cgroup and returns home again.
#[derive(Debug)]
pub struct ThreadFiles {
    /// Written with the thread id to join (one per controller hierarchy).
    pub join: Vec<File>,
    /// Written with the thread id to go back to where the process lives.
    pub home: Vec<File>,
}

/// A cgroup implementation (v1 or v2). One manager per [`crate::Isolation`].
pub trait CgroupManager: Send + Sync + fmt::Debug {
    /// The cgroup version this manager drives.
    fn version(&self) -> CgroupVersion;
    /// Creates the function cgroup `name` and applies `limits`. Returns the limits that
    /// could not be applied (missing controller, not applicable to threads, ...).
    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Vec<Degradation>, CgroupError>;
    /// Opens the files through which a thread joins `name` and leaves it again.
    fn thread_files(&self, name: &str, limits: &CgroupLimits) -> Result<ThreadFiles, CgroupError>;
    /// Moves a whole process into `name` (all controllers that were set up for it).
    fn add_process(&self, name: &str, pid: u32) -> Result<(), CgroupError>;
    /// Removes the function cgroup `name`. Fails with `EBUSY` while tasks are inside.
    fn remove(&self, name: &str) -> Result<(), CgroupError>;
    /// Directories of this manager's base cgroups (for diagnostics and tests).
    fn base_paths(&self) -> Vec<PathBuf>;
    /// Checks, without creating anything, that this process may create cgroups where
    /// the manager would (write access to the parent directory).
    fn probe(&self) -> Result<(), CgroupError>;
}

fn check_writable(dir: &Path) -> Result<(), CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| CgroupError::Unavailable(format!("bad path {}", dir.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(io_err("access", dir)(io::Error::last_os_error()))
    }
}

/// Where the cgroup filesystems are mounted and where this process sits in them.
#[derive(Debug, Clone, Default)]
pub struct CgroupLayout {
    /// Mount point of the cgroup2 filesystem, if any.
    pub unified: Option<PathBuf>,
    /// Mount point per v1 controller (`cpu` -> `/sys/fs/cgroup/cpu`).
    pub v1: HashMap<String, PathBuf>,
    /// This process's cgroup path in the unified hierarchy (`0::<path>`).
    pub own_v2: Option<String>,
    /// This process's cgroup path per v1 controller.
    pub own_v1: HashMap<String, String>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mounts` and `/proc/self/cgroup`.
    pub fn detect() -> CgroupLayout {
        let mut layout = CgroupLayout::default();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            match f[2] {
                "cgroup2" => {
                    layout.unified.get_or_insert_with(|| PathBuf::from(f[1]));
                }
                "cgroup" => {
                    for opt in f[3].split(',') {
                        if matches!(opt, "cpu" | "cpuacct" | "memory" | "pids" | "cpuset") {
                            layout
                                .v1
                                .entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(f[1]));
                        }
                    }
                }
                _ => {}
            }
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for line in own.lines() {
            let mut it = line.splitn(3, ':');
            let (_, ctrls, path) = match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => continue,
            };
            if ctrls.is_empty() {
                layout.own_v2 = Some(path.to_string());
            } else {
                for c in ctrls.split(',') {
                    layout.own_v1.insert(c.to_string(), path.to_string());
                }
            }
        }
        layout
    }

    /// Controllers enabled for children of this process's cgroup in the unified
    /// hierarchy (its `cgroup.controllers`).
    pub fn v2_controllers(&self) -> Vec<String> {
        match self.v2_home() {
            Some(home) => fs::read_to_string(home.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        }
    }

    fn v2_home(&self) -> Option<PathBuf> {
        let root = self.unified.as_ref()?;
        let own = self.own_v2.as_deref().unwrap_or("/");
        Some(root.join(own.trim_start_matches('/')))
    }

    /// Picks the version to use: v2 if its `cpu` controller is available to this
    /// process, otherwise v1 if the v1 `cpu` controller is mounted.
    pub fn preferred_version(&self) -> Option<CgroupVersion> {
        if self.v2_controllers().iter().any(|c| c == "cpu") {
            Some(CgroupVersion::V2)
        } else if self.v1.contains_key("cpu") {
            Some(CgroupVersion::V1)
        } else if self.unified.is_some() {
            Some(CgroupVersion::V2)
        } else {
            None
        }
    }

    /// Every directory in which this crate may create base cgroups: the v1 controller
    /// roots, the v2 root, and this process's own v2 cgroup.
    fn base_parents(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.v1.values().cloned().collect();
        if let Some(u) = &self.unified {
            dirs.push(u.clone());
        }
        if let Some(h) = self.v2_home() {
            dirs.push(h);
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// Creates the manager for `version` (or the preferred one), owning base cgroups named
/// `instance`.
pub fn new_manager(
    layout: &CgroupLayout,
    version: Option<CgroupVersion>,
    instance: &str,
) -> Result<Box<dyn CgroupManager>, CgroupError> {
    match version.or_else(|| layout.preferred_version()) {
        Some(CgroupVersion::V1) => Ok(Box::new(V1Manager::new(layout, instance)?)),
        Some(CgroupVersion::V2) => Ok(Box::new(V2Manager::new(layout, instance)?)),
        None => Err(CgroupError::Unavailable(
            "neither cgroup v1 cpu controller nor cgroup2 is mounted".into(),
        )),
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("write", path))
}

fn open_write(path: &Path) -> Result<File, CgroupError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("mkdir", path)(e)),
    }
}

/// Removes a cgroup directory and its child cgroups (deepest first). cgroupfs only
/// allows `rmdir`; the control files disappear with the directory.
fn rmdir_tree(path: &Path) -> io::Result<()> {
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes base cgroups left behind by dead processes that used `prefix`.
/// Returns what could not be removed.
pub fn cleanup_stale(layout: &CgroupLayout, prefix: &str) -> Vec<Degradation> {
    let mut failed = Vec::new();
    for parent in layout.base_parents() {
        for name in util::list_dir(&parent) {
            if let Some((_, true)) = util::parse_owned(prefix, &name) {
                let path = parent.join(&name);
                if let Err(e) = rmdir_tree(&path) {
                    failed.push(Degradation::new(
                        "stale cleanup",
                        format!("could not remove stale cgroup {}: {e}", path.display()),
                    ));
                }
            }
        }
    }
    failed
}

/// Lists every cgroup directory whose name starts with `prefix` in any hierarchy.
/// Used by tests to prove that nothing leaks.
pub fn list_with_prefix(prefix: &str) -> Vec<PathBuf> {
    let layout = CgroupLayout::detect();
    let mut found = Vec::new();
    for parent in layout.base_parents() {
        for name in util::list_dir(&parent) {
            if name.starts_with(prefix) {
                found.push(parent.join(name));
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// v1

/// cgroup v1: one hierarchy per controller; threads join through `tasks`.
#[derive(Debug)]
pub struct V1Manager {
    instance: String,
    /// Controller -> (mount point, this process's cgroup in it).
    mounts: HashMap<String, (PathBuf, String)>,
    /// Controllers whose base directory we created.
    created: Mutex<HashSet<String>>,
}

impl V1Manager {
    /// A manager for the v1 hierarchies in `layout`.
    pub fn new(layout: &CgroupLayout, instance: &str) -> Result<V1Manager, CgroupError> {
        if !layout.v1.contains_key("cpu") {
            return Err(CgroupError::Unavailable(
                "cgroup v1 cpu controller not mounted".into(),
            ));
        }
        let mounts = layout
            .v1
            .iter()
            .map(|(c, m)| {
                let own = layout.own_v1.get(c).cloned().unwrap_or_else(|| "/".into());
                (c.clone(), (m.clone(), own))
            })
            .collect();
        Ok(V1Manager {
            instance: instance.to_string(),
            mounts,
            created: Mutex::new(HashSet::new()),
        })
    }

    fn base(&self, ctrl: &str) -> Option<PathBuf> {
        self.mounts.get(ctrl).map(|(m, _)| m.join(&self.instance))
    }

    fn dir(&self, ctrl: &str, name: &str) -> Option<PathBuf> {
        self.base(ctrl).map(|b| b.join(name))
    }

    fn home_tasks(&self, ctrl: &str) -> Option<PathBuf> {
        self.mounts
            .get(ctrl)
            .map(|(m, own)| m.join(own.trim_start_matches('/')).join("tasks"))
    }

    fn ensure(&self, ctrl: &str, name: &str) -> Result<PathBuf, CgroupError> {
        let base = self.base(ctrl).ok_or_else(|| {
            CgroupError::Unavailable(format!("cgroup v1 {ctrl} controller not mounted"))
        })?;
        {
            let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
            if !created.contains(ctrl) {
                mkdir(&base)?;
                created.insert(ctrl.to_string());
            }
        }
        let dir = base.join(name);
        mkdir(&dir)?;
        Ok(dir)
    }

    /// Controllers a function with `limits` uses, and whether threads join them.
    fn controllers(limits: &CgroupLimits) -> Vec<(&'static str, bool)> {
        let mut v = Vec::new();
        if limits.wants_cpu() {
            v.push(("cpu", true));
        }
        if limits.pids_max.is_some() {
            v.push(("pids", true));
        }
        if limits.memory_max.is_some() {
            v.push(("memory", false));
        }
        v
    }
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Vec<Degradation>, CgroupError> {
        limits.validate()?;
        let mut degraded = Vec::new();
        for (ctrl, _) in Self::controllers(limits) {
            if !self.mounts.contains_key(ctrl) {
                degraded.push(Degradation::new(
                    limit_name(ctrl),
                    format!("cgroup v1 {ctrl} controller is not mounted"),
                ));
                continue;
            }
            let dir = self.ensure(ctrl, name)?;
            match ctrl {
                "cpu" => {
                    if let Some(w) = limits.cpu_weight {
                        let shares = CgroupLimits::weight_to_shares(w);
                        write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                    }
                    if let Some((quota, period)) = limits.cpu_max {
                        write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                        write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
                "pids" => {
                    if let Some(p) = limits.pids_max {
                        write_file(&dir.join("pids.max"), &p.to_string())?;
                    }
                }
                "memory" => {
                    if let Some(m) = limits.memory_max {
                        write_file(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    }
                    degraded.push(Degradation::new(
                        "memory.max",
                        "cgroup v1 charges memory per process (mm owner), not per thread: \
                         memory.limit_in_bytes applies only to processes added with add_process",
                    ));
                }
                _ => unreachable!(),
            }
        }
        Ok(degraded)
    }

    fn thread_files(&self, name: &str, limits: &CgroupLimits) -> Result<ThreadFiles, CgroupError> {
        let mut files = ThreadFiles {
            join: Vec::new(),
            home: Vec::new(),
        };
        for (ctrl, threads) in Self::controllers(limits) {
            if !threads || !self.mounts.contains_key(ctrl) {
                continue;
            }
            let dir = self.dir(ctrl, name).expect("mounted");
            files.join.push(open_write(&dir.join("tasks"))?);
            files
                .home
                .push(open_write(&self.home_tasks(ctrl).expect("mounted"))?);
        }
        Ok(files)
    }

    fn add_process(&self, name: &str, pid: u32) -> Result<(), CgroupError> {
        let created: Vec<String> = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for ctrl in created {
            let dir = self.dir(&ctrl, name).expect("mounted");
            if dir.exists() {
                write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let created: Vec<String> = self
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for ctrl in created {
            let dir = self.dir(&ctrl, name).expect("mounted");
            rmdir_tree(&dir).map_err(io_err("rmdir", &dir))?;
        }
        Ok(())
    }

    fn base_paths(&self) -> Vec<PathBuf> {
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        created.iter().filter_map(|c| self.base(c)).collect()
    }

    fn probe(&self) -> Result<(), CgroupError> {
        self.probe_impl()
    }
}

impl V1Manager {
    fn probe_impl(&self) -> Result<(), CgroupError> {
        let (mount, _) = &self.mounts["cpu"];
        check_writable(mount)
    }
}

impl Drop for V1Manager {
    fn drop(&mut self) {
        for base in self.base_paths() {
            if let Err(e) = rmdir_tree(&base) {
                eprintln!(
                    "faaslet-netns: could not remove cgroup {}: {e}",
                    base.display()
                );
            }
        }
    }
}

fn limit_name(ctrl: &str) -> &'static str {
    match ctrl {
        "cpu" => "cpu.weight/cpu.max",
        "pids" => "pids.max",
        "memory" => "memory.max",
        _ => "cgroup",
    }
}

// ---------------------------------------------------------------------------------------
// v2

/// cgroup v2: a threaded subtree below this process's own cgroup; threads join through
/// `cgroup.threads`.
#[derive(Debug)]
pub struct V2Manager {
    /// This process's cgroup (the threaded domain).
    home: PathBuf,
    /// `<home>/<instance>`, type threaded.
    base: PathBuf,
    /// Controllers available in `home` (`cgroup.controllers`).
    available: Vec<String>,
    /// Whether `base` exists and which controllers were enabled below it.
    state: Mutex<Option<HashSet<String>>>,
}

impl V2Manager {
    /// A manager for the unified hierarchy in `layout`.
    pub fn new(layout: &CgroupLayout, instance: &str) -> Result<V2Manager, CgroupError> {
        let home = layout
            .v2_home()
            .ok_or_else(|| CgroupError::Unavailable("cgroup2 is not mounted".into()))?;
        Ok(V2Manager {
            base: home.join(instance),
            available: layout.v2_controllers(),
            home,
            state: Mutex::new(None),
        })
    }

    /// Creates the threaded base and enables the threaded controllers we need that are
    /// available. Returns the set of enabled controllers.
    fn ensure_base(&self, wanted: &[&str]) -> Result<HashSet<String>, CgroupError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            mkdir(&self.base)?;
            write_file(&self.base.join("cgroup.type"), "threaded")?;
            *state = Some(HashSet::new());
        }
        let enabled = state.as_mut().expect("just set");
        for c in wanted {
            if enabled.contains(*c) || !self.available.iter().any(|a| a == c) {
                continue;
            }
            let ctl = format!("+{c}");
            write_file(&self.home.join("cgroup.subtree_control"), &ctl)?;
            write_file(&self.base.join("cgroup.subtree_control"), &ctl)?;
            enabled.insert(c.to_string());
        }
        Ok(enabled.clone())
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Vec<Degradation>, CgroupError> {
        limits.validate()?;
        let mut wanted = Vec::new();
        if limits.wants_cpu() {
            wanted.push("cpu");
        }
        if limits.pids_max.is_some() {
            wanted.push("pids");
        }
        let enabled = self.ensure_base(&wanted)?;
        let dir = self.base.join(name);
        mkdir(&dir)?;
        write_file(&dir.join("cgroup.type"), "threaded")?;
        let mut degraded = Vec::new();
        let missing = |d: &mut Vec<Degradation>, what: &'static str, c: &str| {
            d.push(Degradation::new(
                what,
                format!("cgroup v2 {c} controller is not available to this process"),
            ))
        };
        if limits.wants_cpu() {
            if enabled.contains("cpu") {
                if let Some(w) = limits.cpu_weight {
                    write_file(&dir.join("cpu.weight"), &w.to_string())?;
                }
                if let Some((q, p)) = limits.cpu_max {
                    write_file(&dir.join("cpu.max"), &format!("{q} {p}"))?;
                }
            } else {
                missing(&mut degraded, "cpu.weight/cpu.max", "cpu");
            }
        }
        if let Some(p) = limits.pids_max {
            if enabled.contains("pids") {
                write_file(&dir.join("pids.max"), &p.to_string())?;
            } else {
                missing(&mut degraded, "pids.max", "pids");
            }
        }
        if limits.memory_max.is_some() {
            degraded.push(Degradation::new(
                "memory.max",
                "memory is a domain controller and cannot be used in the threaded subtree \
                 that per-thread cgroups require",
            ));
        }
        Ok(degraded)
    }

    fn thread_files(&self, name: &str, _limits: &CgroupLimits) -> Result<ThreadFiles, CgroupError> {
        Ok(ThreadFiles {
            join: vec![open_write(&self.base.join(name).join("cgroup.threads"))?],
            home: vec![open_write(&self.home.join("cgroup.threads"))?],
        })
    }

    fn add_process(&self, _name: &str, _pid: u32) -> Result<(), CgroupError> {
        Err(CgroupError::Unsupported {
            version: CgroupVersion::V2,
            what: "whole processes cannot join a threaded cgroup",
        })
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        let dir = self.base.join(name);
        rmdir_tree(&dir).map_err(io_err("rmdir", &dir))
    }

    fn base_paths(&self) -> Vec<PathBuf> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.iter().map(|_| self.base.clone()).collect()
    }

    fn probe(&self) -> Result<(), CgroupError> {
        check_writable(&self.home)
    }
}

impl Drop for V2Manager {
    fn drop(&mut self) {
        for base in self.base_paths() {
            if let Err(e) = rmdir_tree(&base) {
                eprintln!(
                    "faaslet-netns: could not remove cgroup {}: {e}",
                    base.display()
                );
            }
        }
        // Controllers enabled in `home`'s subtree_control are left enabled: other
        // children may rely on them, and enabling them is harmless.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_from_weight() {
        assert_eq!(CgroupLimits::weight_to_shares(100), 1024);
        assert_eq!(CgroupLimits::weight_to_shares(300), 3072);
        assert_eq!(CgroupLimits::weight_to_shares(1), 10);
        assert_eq!(CgroupLimits::weight_to_shares(10_000), 102_400);
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let bad = CgroupLimits {
            cpu_weight: Some(0),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = CgroupLimits {
            cpu_max: Some((10, 100_000)),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(CgroupLimits::default().validate().is_ok());
    }

    #[test]
    fn layout_detection_does_not_panic() {
        let l = CgroupLayout::detect();
        let _ = l.preferred_version();
    }
}
