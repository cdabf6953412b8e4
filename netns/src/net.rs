//! A pool of network namespaces, created ahead of time.
//!
//! Creating a namespace with its veth pair, addresses, routes and qdiscs takes
//! milliseconds; joining one with `setns(2)` takes about a microsecond. So the pool is
//! filled when the [`crate::Isolation`] is created and a Faaslet's thread only joins
//! (and leaves) a namespace around each call. `setns(fd, CLONE_NEWNET)` changes the
//! namespace of the calling thread only.
//!
//! Every namespace `<instance>-<i>` gets:
//!
//! * a veth pair: `f<hash>h<i>` in the host, `f<hash>n<i>` inside (`<hash>` is 8 hex
//!   digits of the instance name: interface names are limited to 15 bytes);
//! * the `i`-th /30 of the configured subnet: `.1` on the host side, `.2` inside, a
//!   default route via the host side, and `lo` up (so a function's own loopback works,
//!   while the host's loopback services are unreachable);
//! * optionally NAT: an `iptables -t nat POSTROUTING MASQUERADE` rule for the subnet,
//!   tagged with the instance name as comment, and `net.ipv4.ip_forward = 1` (which is
//!   not restored, as other users may depend on it);
//! * optionally shaping: a `tbf` qdisc with the configured rate on both ends of the
//!   veth. The namespace end shapes egress (traffic out of the namespace); the host end
//!   shapes what enters the namespace (its ingress), so no `ifb` device is needed.
//!
//! # Tools versus netlink
//!
//! Setup and teardown run `ip` and `tc` (iproute2) and, for NAT, `iptables`, batched
//! (`-batch -`) to spawn as few processes as possible: about two per namespace. This is
//! simple, readable and easy to debug (the commands are the ones an operator would type),
//! at the price of a runtime dependency on iproute2/iptables and a few milliseconds per
//! namespace. A netlink implementation (rtnetlink for links, addresses, routes and
//! qdiscs; nftables for NAT) would be faster and dependency-free but much more code. The
//! cost is paid once, when the pool is created, not per call; joining a namespace never
//! spawns anything.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;

use thiserror::Error;

use crate::util;
use crate::Degradation;

/// Where `ip netns` keeps its namespace bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors from network namespace operations.
#[derive(Debug, Error)]
pub enum NetError {
    /// A tool could not be started (typically: not installed).
    #[error("could not run {tool}: {source}")]
    Spawn {
        /// The tool (`ip`, `tc`, `iptables`).
        tool: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A tool exited with an error.
    #[error("{tool} failed ({status}): {stderr}\ninput: {input}")]
    Tool {
        /// The tool (`ip`, `tc`, `iptables`).
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
        /// The arguments or batch input it was given.
        input: String,
    },
    /// A namespace file could not be opened or `setns` failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The namespace file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// Every namespace of the pool is in use.
    #[error("all {0} pooled network namespaces are in use")]
    PoolExhausted(usize),
}

/// An IPv4 network in CIDR notation, such as `10.200.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// The network address (host bits are ignored).
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=30.
    pub prefix_len: u8,
}

impl Ipv4Net {
    /// Creates a network; fails if `prefix_len > 30` (a /30 per namespace must fit).
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, NetError> {
        if prefix_len > 30 {
            return Err(NetError::Config(format!(
                "subnet /{prefix_len} is smaller than one /30"
            )));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
        })
    }

    /// How many /30 blocks (namespaces) fit.
    pub fn slots(&self) -> usize {
        1usize << (30 - self.prefix_len)
    }

    /// The `(host side, namespace side)` addresses of slot `i`.
    pub fn slot_addrs(&self, i: usize) -> (Ipv4Addr, Ipv4Addr) {
        let base = u32::from(self.addr) + (i as u32) * 4;
        (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Ipv4Net, NetError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| NetError::Config(format!("subnet {s:?} is not a.b.c.d/len")))?;
        let addr = a
            .parse()
            .map_err(|_| NetError::Config(format!("bad address in {s:?}")))?;
        let len = p
            .parse()
            .map_err(|_| NetError::Config(format!("bad prefix length in {s:?}")))?;
        Ipv4Net::new(addr, len)
    }
}

/// Network isolation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Number of namespaces created ahead of time; at most this many threads can be
    /// inside a namespace at once.
    pub pool_size: usize,
    /// Private range to carve one /30 per namespace from. Must not overlap with any
    /// other engine's range on the host.
    pub subnet: Ipv4Net,
    /// Masquerade the namespaces' traffic so that it can leave the host.
    pub nat: bool,
    /// Rate limit in Mbit/s, applied to both directions of every namespace.
    pub rate_mbit: Option<u32>,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            pool_size: 8,
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 200, 0, 0),
                prefix_len: 16,
            },
            nat: false,
            rate_mbit: None,
        }
    }
}

/// One pooled namespace.
#[derive(Debug)]
pub struct NetSlot {
    /// Namespace name (its bind mount is `/run/netns/<name>`).
    pub name: String,
    /// Host side veth.
    pub host_if: String,
    /// Namespace side veth.
    pub ns_if: String,
    /// Host side address (reachable from inside the namespace).
    pub host_addr: Ipv4Addr,
    /// Namespace side address.
    pub ns_addr: Ipv4Addr,
    fd: File,
}

/// The namespaces of one [`crate::Isolation`].
#[derive(Debug)]
pub(crate) struct NetPool {
    instance: String,
    slots: Vec<NetSlot>,
    free: Mutex<Vec<usize>>,
    host: File,
    nat_rule: Option<Vec<String>>,
    /// (namespace, host veth) of everything we asked `ip` to create.
    created: Vec<(String, String)>,
}

fn if_names(hash: &str, i: usize) -> (String, String) {
    (format!("f{hash}h{i}"), format!("f{hash}n{i}"))
}

/// Runs `tool args...`, feeding `input` on stdin if given.
fn run(tool: &'static str, args: &[&str], input: Option<&str>) -> Result<(), NetError> {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|source| NetError::Spawn { tool, source })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped");
        // A tool that exits early closes the pipe; its status reports the error.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetError::Spawn { tool, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Tool {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            input: input.map_or_else(|| args.join(" "), str::to_string),
        })
    }
}

fn tbf(dev: &str, rate_mbit: u32) -> String {
    // Burst: 20 ms worth of data, at least 32 KiB (several MTUs, one TSO segment).
    let bytes_per_s = u64::from(rate_mbit) * 1_000_000 / 8;
    let burst = (bytes_per_s / 50).max(32 * 1024);
    format!("qdisc add dev {dev} root tbf rate {rate_mbit}mbit burst {burst} latency 50ms\n")
}

/// Opens a namespace file.
fn open_ns(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|source| NetError::Io {
        op: "open",
        path: path.to_path_buf(),
        source,
    })
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub(crate) fn setns(fd: &File) -> io::Result<()> {
    // SAFETY: `fd` is an open namespace file owned by the caller for the duration of the
    // call; setns does not retain it. CLONE_NEWNET only changes the calling thread.
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl NetPool {
    /// Creates `cfg.pool_size` namespaces. On failure, whatever was created is removed.
    pub(crate) fn new(cfg: &NetConfig, instance: &str, hash: &str) -> Result<NetPool, NetError> {
        if cfg.pool_size == 0 || cfg.pool_size > cfg.subnet.slots() || cfg.pool_size > 99_999 {
            return Err(NetError::Config(format!(
                "pool_size {} does not fit in {} ({} /30 blocks, at most 99999)",
                cfg.pool_size,
                cfg.subnet,
                cfg.subnet.slots()
            )));
        }
        if cfg.rate_mbit == Some(0) {
            return Err(NetError::Config("rate_mbit must be > 0".into()));
        }
        let host_path = Path::new("/proc/thread-self/ns/net");
        let host = open_ns(host_path)?;
        let mut pool = NetPool {
            instance: instance.to_string(),
            slots: Vec::new(),
            free: Mutex::new(Vec::new()),
            host,
            nat_rule: None,
            created: Vec::new(),
        };
        // On error, `pool` is dropped and removes what exists so far.
        pool.create_slots(cfg, hash)?;
        if cfg.nat {
            pool.enable_nat(cfg)?;
        }
        *pool.free.lock().unwrap_or_else(|e| e.into_inner()) =
            (0..pool.slots.len()).rev().collect();
        Ok(pool)
    }

    fn create_slots(&mut self, cfg: &NetConfig, hash: &str) -> Result<(), NetError> {
        let mut host_batch = String::new();
        let mut tc_batch = String::new();
        let mut planned = Vec::new();
        for i in 0..cfg.pool_size {
            let name = format!("{}-{i}", self.instance);
            let (host_if, ns_if) = if_names(hash, i);
            let (host_addr, ns_addr) = cfg.subnet.slot_addrs(i);
            host_batch += &format!(
                "netns add {name}\n\
                 link add {host_if} type veth peer name {ns_if} netns {name}\n\
                 addr add {host_addr}/30 dev {host_if}\n\
                 link set {host_if} up\n"
            );
            if let Some(rate) = cfg.rate_mbit {
                tc_batch += &tbf(&host_if, rate);
            }
            planned.push((name, host_if, ns_if, host_addr, ns_addr));
        }
        // Record names first so that Drop cleans up even if a batch fails half-way.
        self.created = planned.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
        run("ip", &["-batch", "-"], Some(&host_batch))?;
        for (name, host_if, ns_if, host_addr, ns_addr) in planned {
            let fd = open_ns(&Path::new(NETNS_RUN_DIR).join(&name))?;
            self.slots.push(NetSlot {
                name,
                host_if,
                ns_if,
                host_addr,
                ns_addr,
                fd,
            });
        }
        if !tc_batch.is_empty() {
            run("tc", &["-batch", "-"], Some(&tc_batch))?;
        }
        for s in &self.slots {
            let mut inner = format!(
                "addr add {}/30 dev {}\nlink set {} up\nlink set lo up\nroute add default via {}\n",
                s.ns_addr, s.ns_if, s.ns_if, s.host_addr
            );
            run("ip", &["-n", &s.name, "-batch", "-"], Some(&inner))?;
            if let Some(rate) = cfg.rate_mbit {
                inner = tbf(&s.ns_if, rate);
                run("tc", &["-n", &s.name, "-batch", "-"], Some(&inner))?;
            }
        }
        Ok(())
    }

    fn enable_nat(&mut self, cfg: &NetConfig) -> Result<(), NetError> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| NetError::Io {
            op: "write",
            path: "/proc/sys/net/ipv4/ip_forward".into(),
            source,
        })?;
        let rule: Vec<String> = [
            "POSTROUTING",
            "-s",
            &cfg.subnet.to_string(),
            "-m",
            "comment",
            "--comment",
            &self.instance,
            "-j",
            "MASQUERADE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = vec!["-w", "-t", "nat", "-A"];
        args.extend(rule.iter().map(String::as_str));
        run("iptables", &args, None)?;
        self.nat_rule = Some(rule);
        Ok(())
    }

    fn cleanup_names(&self, names: &[(String, String)]) {
        let mut batch = String::new();
        for (name, host_if) in names {
            batch += &format!("link del {host_if}\nnetns del {name}\n");
        }
        // -force: keep going past entries that do not exist.
        let _ = run("ip", &["-force", "-batch", "-"], Some(&batch));
    }

    /// Takes a free namespace.
    pub(crate) fn acquire(&self) -> Result<&NetSlot, NetError> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let i = free
            .pop()
            .ok_or(NetError::PoolExhausted(self.slots.len()))?;
        Ok(&self.slots[i])
    }

    /// Returns a namespace taken with [`NetPool::acquire`].
    pub(crate) fn release(&self, slot: &NetSlot) {
        let i = self
            .slots
            .iter()
            .position(|s| std::ptr::eq(s, slot))
            .expect("slot belongs to this pool");
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(i);
    }

    /// Joins `slot` on the calling thread.
    pub(crate) fn join(&self, slot: &NetSlot) -> Result<(), NetError> {
        setns(&slot.fd).map_err(|source| NetError::Io {
            op: "setns",
            path: Path::new(NETNS_RUN_DIR).join(&slot.name),
            source,
        })
    }

    /// Returns the calling thread to the namespace the pool was created from.
    pub(crate) fn leave(&self) -> Result<(), NetError> {
        setns(&self.host).map_err(|source| NetError::Io {
            op: "setns",
            path: "host network namespace".into(),
            source,
        })
    }

    pub(crate) fn slots(&self) -> &[NetSlot] {
        &self.slots
    }
}

impl Drop for NetPool {
    fn drop(&mut self) {
        if let Some(rule) = self.nat_rule.take() {
            let mut args = vec!["-w", "-t", "nat", "-D"];
            args.extend(rule.iter().map(String::as_str));
            if let Err(e) = run("iptables", &args, None) {
                eprintln!("faaslet-netns: could not remove NAT rule: {e}");
            }
        }
        // Close our namespace fds first so that the namespaces die with their mounts.
        self.slots.clear();
        let names = std::mem::take(&mut self.created);
        if !names.is_empty() {
            self.cleanup_names(&names);
        }
    }
}

/// Removes namespaces (with their veths) and NAT rules left behind by dead processes
/// that used `prefix`. Returns what could not be removed.
pub(crate) fn cleanup_stale(prefix: &str) -> Vec<Degradation> {
    let mut failed = Vec::new();
    let mut batch = String::new();
    let mut stale_names = Vec::new();
    for name in util::list_dir(Path::new(NETNS_RUN_DIR)) {
        if let Some((instance, true)) = util::parse_owned(prefix, &name) {
            let i: usize = match name.rsplit('-').next().and_then(|s| s.parse().ok()) {
                Some(i) if name != instance => i,
                _ => continue,
            };
            let (host_if, _) = if_names(&util::short_hash(&instance), i);
            batch += &format!("link del {host_if}\nnetns del {name}\n");
            stale_names.push(name);
        }
    }
    if !batch.is_empty() {
        let _ = run("ip", &["-force", "-batch", "-"], Some(&batch));
        for name in stale_names {
            if Path::new(NETNS_RUN_DIR).join(&name).exists() {
                failed.push(Degradation::new(
                    "stale cleanup",
                    format!("could not remove stale network namespace {name}"),
                ));
            }
        }
    }
    // NAT rules carry the instance name as comment.
    if let Ok(out) = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
        .stderr(Stdio::null())
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect();
            let Some(pos) = words.iter().position(|w| w == "--comment") else {
                continue;
            };
            let Some(comment) = words.get(pos + 1) else {
                continue;
            };
            if let Some((_, true)) = util::parse_owned(prefix, comment) {
                if words.first().map(String::as_str) != Some("-A") {
                    continue;
                }
                let mut args = vec!["-w", "-t", "nat", "-D"];
                args.extend(words[1..].iter().map(String::as_str));
                if let Err(e) = run("iptables", &args, None) {
                    failed.push(Degradation::new(
                        "stale cleanup",
                        format!("could not remove stale NAT rule: {e}"),
                    ));
                }
            }
        }
    }
    failed
}

/// Lists namespaces in `/run/netns` whose names start with `prefix`.
/// Used by tests to prove that nothing leaks.
pub fn list_leftovers(prefix: &str) -> Vec<String> {
    util::list_dir(Path::new(NETNS_RUN_DIR))
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parsing_and_slots() {
        let n: Ipv4Net = "10.200.3.7/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.200.0.0/16");
        assert_eq!(n.slots(), 16384);
        assert_eq!(
            n.slot_addrs(2),
            (Ipv4Addr::new(10, 200, 0, 9), Ipv4Addr::new(10, 200, 0, 10))
        );
        assert!("10.0.0.0/31".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert_eq!("10.0.0.0/30".parse::<Ipv4Net>().unwrap().slots(), 1);
    }

    #[test]
    fn interface_names_fit() {
        let (h, n) = if_names("deadbeef", 99_999);
        assert!(h.len() <= 15 && n.len() <= 15, "{h} {n}");
    }
}
