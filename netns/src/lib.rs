//! Per-Faaslet resource isolation: CPU cgroups and network namespaces.
//!
//! Faaslets are threads of one process. So that no function can starve another of CPU
//! or bandwidth, each Faaslet's thread joins, for the duration of a call:
//!
//! * its function's **cgroup** (cgroup v1 or v2, detected), which carries a CPU weight
//!   for the kernel's fair scheduler, an optional CPU bandwidth cap and a pids limit
//!   (see [`cgroup`] for what works per thread on each version); and
//! * a **network namespace** from a pool created ahead of time, with a veth pair to the
//!   host, a private address, optional NAT and `tbf` rate limiting in both directions
//!   (see [`net`]).
//!
//! One [`Isolation`] is created per engine. It detects what the machine allows, removes
//! leftovers of crashed earlier runs that carry the same prefix, and pre-creates the
//! namespace pool. Whatever cannot be applied (not root, a missing controller, a missing
//! tool) is reported once on stderr and available from [`Isolation::report`]; with
//! [`IsolationConfig::strict`] it is an error instead. Dropping the `Isolation` removes
//! everything it created.
//!
//! ```no_run
//! use faaslet_netns::{CgroupLimits, Isolation, IsolationConfig, NetConfig};
//!
//! let iso = Isolation::new(IsolationConfig {
//!     cgroups: Some(CgroupLimits::default()),
//!     network: Some(NetConfig { pool_size: 4, rate_mbit: Some(100), ..NetConfig::default() }),
//!     ..IsolationConfig::default()
//! })?;
//! for d in iso.report() {
//!     println!("not applied: {d}");
//! }
//! let limits = CgroupLimits { cpu_weight: Some(200), ..CgroupLimits::default() };
//! let cg = iso.cgroup_for("resize_image", &limits)?;
//! {
//!     let _guard = iso.enter(Some(&cg))?; // this thread: in the cgroup and a namespace
//!     // ... run the function ...
//! } // back in the host namespace and the process's cgroup
//! # Ok::<(), faaslet_netns::IsolationError>(())
//! ```
//!
//! Namespaces, cgroups and NAT rules are named `<prefix>-<pid>-<starttime>-<n>[-<i>]`;
//! a new `Isolation` removes those whose owning process (pid *and* start time) is gone,
//! so several engines may share a prefix.
//!
//! Privileges: everything needs root (or `CAP_SYS_ADMIN` + `CAP_NET_ADMIN` and write
//! access to the cgroup hierarchies). Network setup needs `ip` and `tc` (iproute2) and,
//! with NAT, `iptables`.

#![warn(missing_docs)]

pub mod cgroup;
pub mod net;
mod util;

use std::fmt;
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;

pub use cgroup::{CgroupError, CgroupLimits, CgroupManager, CgroupVersion};
pub use net::{Ipv4Net, NetConfig, NetError};

/// Something the isolation layer could not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degradation {
    /// What is missing: a limit (`memory.max`), `cgroups`, `network`, ...
    pub feature: String,
    /// Why.
    pub reason: String,
}

impl Degradation {
    /// Creates a degradation record.
    pub fn new(feature: impl Into<String>, reason: impl Into<String>) -> Degradation {
        Degradation {
            feature: feature.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Degradation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.feature, self.reason)
    }
}

/// Errors from the isolation layer.
#[derive(Debug, Error)]
pub enum IsolationError {
    /// The configuration is invalid.
    #[error("invalid isolation configuration: {0}")]
    Config(String),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A network namespace operation failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The calling thread is already inside isolation (`enter` does not nest).
    #[error("this thread is already inside isolation")]
    AlreadyEntered,
    /// `strict` is set and something could not be applied.
    #[error("isolation could not be applied (strict mode): {}", list(.0))]
    Degraded(Vec<Degradation>),
}

fn list(d: &[Degradation]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Engine-wide isolation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationConfig {
    /// Enable cgroups, with these default limits (see [`Isolation::default_limits`]).
    /// Per-function limits are given to [`Isolation::cgroup_for`].
    pub cgroups: Option<CgroupLimits>,
    /// Force a cgroup version instead of detecting it.
    pub cgroup_version: Option<CgroupVersion>,
    /// Enable network namespaces.
    pub network: Option<NetConfig>,
    /// Fail instead of degrading when something cannot be applied.
    pub strict: bool,
    /// Prefix of everything created (cgroups, namespaces, NAT rule comments).
    /// ASCII letters, digits and `_` only, at most 32 bytes.
    pub prefix: String,
}

impl Default for IsolationConfig {
    fn default() -> IsolationConfig {
        IsolationConfig {
            cgroups: None,
            cgroup_version: None,
            network: None,
            strict: false,
            prefix: "faaslet".to_string(),
        }
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether the current thread holds an [`IsolationGuard`].
    static ENTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The isolation layer of one engine. Create once; share by reference (it is `Sync`).
///
/// Dropping it removes the namespace pool, the NAT rule and (once every
/// [`FunctionCgroup`] is gone too) the cgroups.
#[derive(Debug)]
pub struct Isolation {
    instance: String,
    strict: bool,
    default_limits: CgroupLimits,
    cgroups: Option<Arc<dyn CgroupManager>>,
    net: Option<net::NetPool>,
    report: Mutex<Vec<Degradation>>,
    next_cgroup: AtomicU64,
}

impl Isolation {
    /// Detects capabilities, removes stale leftovers of dead processes with the same
    /// prefix, sets up cgroups and pre-creates the namespace pool.
    ///
    /// What cannot be applied is printed once to stderr and kept in [`Isolation::report`];
    /// with `strict` it is returned as [`IsolationError::Degraded`].
    pub fn new(cfg: IsolationConfig) -> Result<Isolation, IsolationError> {
        let p = &cfg.prefix;
        if p.is_empty()
            || p.len() > 32
            || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(IsolationError::Config(format!(
                "prefix {p:?} must be 1..=32 ASCII letters, digits or '_'"
            )));
        }
        if let Some(l) = &cfg.cgroups {
            l.validate()?;
        }
        let id = util::InstanceId::new(p, INSTANCES.fetch_add(1, Ordering::Relaxed));
        let mut degraded = Vec::new();
        let root = util::is_root();
        let layout = cgroup::CgroupLayout::detect();

        if root {
            degraded.extend(cgroup::cleanup_stale(&layout, p));
            if cfg.network.is_some() {
                degraded.extend(net::cleanup_stale(p));
            }
        }

        let cgroups: Option<Arc<dyn CgroupManager>> = match &cfg.cgroups {
            None => None,
            Some(_) => match cgroup::new_manager(&layout, cfg.cgroup_version, &id.name)
                .and_then(|m| m.probe().map(|()| m))
            {
                Ok(m) => Some(Arc::from(m)),
                Err(e) => {
                    degraded.push(Degradation::new("cgroups", e.to_string()));
                    None
                }
            },
        };

        let net = match &cfg.network {
            None => None,
            Some(_) if !root => {
                degraded.push(Degradation::new(
                    "network",
                    "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN",
                ));
                None
            }
            Some(n) => match net::NetPool::new(n, &id.name, &id.short_hash()) {
                Ok(pool) => Some(pool),
                Err(e) if cfg.strict => return Err(e.into()),
                Err(e) => {
                    degraded.push(Degradation::new("network", e.to_string()));
                    None
                }
            },
        };

        let iso = Isolation {
            instance: id.name,
            strict: cfg.strict,
            default_limits: cfg.cgroups.unwrap_or_default(),
            cgroups,
            net,
            report: Mutex::new(Vec::new()),
            next_cgroup: AtomicU64::new(0),
        };
        iso.degrade(degraded)?;
        Ok(iso)
    }

    /// Records degradations not seen before, printing each once; errors if strict.
    fn degrade(&self, new: Vec<Degradation>) -> Result<(), IsolationError> {
        if new.is_empty() {
            return Ok(());
        }
        if self.strict {
            return Err(IsolationError::Degraded(new));
        }
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        for d in new {
            if !report.iter().any(|r| r.feature == d.feature) {
                eprintln!("faaslet isolation: not applied: {d}");
                report.push(d);
            }
        }
        Ok(())
    }

    /// Everything that could not be applied so far (each feature once).
    pub fn report(&self) -> Vec<Degradation> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The name of this instance (`<prefix>-<pid>-<starttime>-<n>`), used for the base
    /// cgroups and as the stem of the namespace names.
    pub fn instance_name(&self) -> &str {
        &self.instance
    }

    /// The default limits from [`IsolationConfig::cgroups`].
    pub fn default_limits(&self) -> &CgroupLimits {
        &self.default_limits
    }

    /// The cgroup version in use, if cgroups are enabled and usable.
    pub fn cgroup_version(&self) -> Option<CgroupVersion> {
        self.cgroups.as_ref().map(|m| m.version())
    }

    /// Whether threads entering isolation join a network namespace.
    pub fn has_network(&self) -> bool {
        self.net.is_some()
    }

    /// The pooled namespaces (empty without network isolation).
    pub fn namespaces(&self) -> &[net::NetSlot] {
        self.net.as_ref().map_or(&[], |n| n.slots())
    }

    /// Creates a cgroup for `function` with `limits`. Each call creates a new cgroup
    /// (`<function>-<n>`); it is removed when the returned value is dropped.
    ///
    /// Without usable cgroups this returns a cgroup that threads "join" at no cost.
    pub fn cgroup_for(
        &self,
        function: &str,
        limits: &CgroupLimits,
    ) -> Result<FunctionCgroup, IsolationError> {
        limits.validate()?;
        let Some(mgr) = &self.cgroups else {
            if self.strict {
                return Err(IsolationError::Degraded(vec![Degradation::new(
                    "cgroups",
                    "cgroups are not enabled or not usable",
                )]));
            }
            return Ok(FunctionCgroup {
                mgr: None,
                name: String::new(),
                join: Vec::new(),
                home: Vec::new(),
            });
        };
        let clean: String = function
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let name = format!(
            "{clean}-{}",
            self.next_cgroup.fetch_add(1, Ordering::Relaxed)
        );
        let degraded = match mgr.create(&name, limits) {
            Ok(d) => d,
            Err(e) => {
                let _ = mgr.remove(&name);
                return Err(e.into());
            }
        };
        let files = match self.degrade(degraded).and_then(|()| {
            mgr.thread_files(&name, limits)
                .map_err(IsolationError::from)
        }) {
            Ok(f) => f,
            Err(e) => {
                let _ = mgr.remove(&name);
                return Err(e);
            }
        };
        Ok(FunctionCgroup {
            mgr: Some(mgr.clone()),
            name,
            join: files.join,
            home: files.home,
        })
    }

    /// Moves the calling thread into `cgroup` (if given) and into a free pooled network
    /// namespace (if network isolation is on). The returned guard undoes both when
    /// dropped, on the same thread.
    ///
    /// Fails with [`NetError::PoolExhausted`] when every namespace is in use, and with
    /// [`IsolationError::AlreadyEntered`] if this thread already holds a guard.
    ///
    /// Leaving returns the thread to the network namespace of the thread that called
    /// [`Isolation::new`] and to the cgroups the process was in at that time.
    pub fn enter<'a>(
        &'a self,
        cgroup: Option<&'a FunctionCgroup>,
    ) -> Result<IsolationGuard<'a>, IsolationError> {
        if ENTERED.with(|e| e.replace(true)) {
            return Err(IsolationError::AlreadyEntered);
        }
        let tid = util::gettid();
        let mut guard = IsolationGuard {
            iso: self,
            cgroup: None,
            slot: None,
            tid,
            _not_send: PhantomData,
        };
        if let Some(cg) = cgroup {
            cg.join_thread(tid)?;
            guard.cgroup = Some(cg);
        }
        if let Some(pool) = &self.net {
            let slot = pool.acquire()?;
            if let Err(e) = pool.join(slot) {
                pool.release(slot);
                return Err(e.into());
            }
            guard.slot = Some(slot);
        }
        Ok(guard)
    }
}

/// A function's cgroup. Threads join it through [`Isolation::enter`]. Removed on drop
/// (which fails, with a message on stderr, if threads are still inside).
#[derive(Debug)]
pub struct FunctionCgroup {
    mgr: Option<Arc<dyn CgroupManager>>,
    name: String,
    join: Vec<std::fs::File>,
    home: Vec<std::fs::File>,
}

impl FunctionCgroup {
    /// The cgroup's name below the instance's base cgroup (empty if cgroups are off).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves a whole process into this cgroup (cgroup v1 only; this is how
    /// `memory.limit_in_bytes` can take effect).
    pub fn add_process(&self, pid: u32) -> Result<(), IsolationError> {
        match &self.mgr {
            Some(m) => Ok(m.add_process(&self.name, pid)?),
            None => Ok(()),
        }
    }

    fn join_thread(&self, tid: libc::pid_t) -> Result<(), CgroupError> {
        for (i, f) in self.join.iter().enumerate() {
            if let Err(source) = util::write_id(f, i64::from(tid)) {
                self.leave_thread(tid, i);
                return Err(CgroupError::Io {
                    op: "join thread",
                    path: self.name.clone().into(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Moves `tid` home in the first `n` hierarchies.
    fn leave_thread(&self, tid: libc::pid_t, n: usize) {
        for f in self.home.iter().take(n) {
            if let Err(e) = util::write_id(f, i64::from(tid)) {
                eprintln!(
                    "faaslet isolation: could not move thread {tid} out of cgroup {}: {e}",
                    self.name
                );
            }
        }
    }
}

impl Drop for FunctionCgroup {
    fn drop(&mut self) {
        if let Some(m) = &self.mgr {
            if let Err(e) = m.remove(&self.name) {
                eprintln!("faaslet isolation: {e}");
            }
        }
    }
}

/// The calling thread's stay in isolation. Dropping it (on the same thread: it is not
/// `Send`) moves the thread back to the host network namespace and the process's cgroup.
#[derive(Debug)]
pub struct IsolationGuard<'a> {
    iso: &'a Isolation,
    cgroup: Option<&'a FunctionCgroup>,
    slot: Option<&'a net::NetSlot>,
    tid: libc::pid_t,
    _not_send: PhantomData<*const ()>,
}

impl IsolationGuard<'_> {
    /// The thread's address inside its namespace, if it is in one.
    pub fn ns_addr(&self) -> Option<Ipv4Addr> {
        self.slot.map(|s| s.ns_addr)
    }

    /// The host's address on the namespace's veth, reachable from inside.
    pub fn host_addr(&self) -> Option<Ipv4Addr> {
        self.slot.map(|s| s.host_addr)
    }

    /// The name of the namespace the thread is in.
    pub fn netns_name(&self) -> Option<&str> {
        self.slot.map(|s| s.name.as_str())
    }
}

impl Drop for IsolationGuard<'_> {
    fn drop(&mut self) {
        if let (Some(slot), Some(pool)) = (self.slot, &self.iso.net) {
            // Leaving a thread inside a sandbox namespace would be a security bug:
            // setns on an fd we hold cannot fail in practice, but if it does, stop.
            if let Err(e) = pool.leave() {
                eprintln!("faaslet isolation: cannot leave network namespace: {e}");
                std::process::abort();
            }
            pool.release(slot);
        }
        if let Some(cg) = self.cgroup {
            cg.leave_thread(self.tid, cg.home.len());
        }
        ENTERED.with(|e| e.set(false));
    }
}
