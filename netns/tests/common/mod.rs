//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

/// True if the test may run; otherwise prints why it is skipped.
pub fn need_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: needs root (cgroups, network namespaces); CI runs as root");
        return false;
    }
    true
}

/// True if `ip` and `tc` are installed; otherwise prints why the test is skipped.
pub fn need_iproute2(test: &str) -> bool {
    for tool in ["ip", "tc"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            eprintln!("SKIPPED {test}: `{tool}` not installed (apt-get install iproute2)");
            return false;
        }
    }
    true
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is an empty set. CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The calling thread's cgroup membership as the kernel reports it.
pub fn thread_cgroups() -> String {
    std::fs::read_to_string("/proc/thread-self/cgroup").unwrap()
}

/// Number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Names of the host's network interfaces.
pub fn host_links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}
