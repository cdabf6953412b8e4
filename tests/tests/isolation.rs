//! A Faaslet configured with resource isolation runs each call with its
//! thread inside the function's CPU cgroup, and leaves it afterwards.
//! Needs root and cgroup v1's `cpu` controller (this machine, CI); skips
//! with a printed reason elsewhere.

use faaslet::{Engine, Module};
use faaslet_netns::{CgroupLimits, Isolation, IsolationConfig};
use faaslet_platform::{Faaslet, FaasletConfig, FaasletIsolation};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every `tasks` file under cgroup-v1 `cpu` directories named with `prefix`.
fn task_files(prefix: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "tasks") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup/cpu");
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            walk(&e.path(), &mut out);
        }
    }
    out
}

fn tids_in(prefix: &str) -> Vec<String> {
    task_files(prefix)
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_call_runs_inside_the_function_cgroup_and_leaves_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 || !Path::new("/sys/fs/cgroup/cpu/tasks").exists() {
        println!("skipped: needs root and cgroup v1 `cpu` at /sys/fs/cgroup/cpu");
        return;
    }
    let prefix = format!("fltiso{}", std::process::id());
    let limits = CgroupLimits {
        cpu_weight: Some(50),
        ..CgroupLimits::default()
    };
    let isolation = Isolation::new(IsolationConfig {
        cgroups: Some(limits.clone()),
        prefix: prefix.clone(),
        strict: true,
        ..IsolationConfig::default()
    })
    .expect("isolation as root");
    let engine = Engine::default();
    // Spins for a while so another thread can look at the cgroup mid-call.
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1)
             (func (export "_start") (local i32)
               (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                        (br_if $l (i32.ne (local.get 0) (i32.const 300000000))))))"#,
    )
    .unwrap();
    let mut config = FaasletConfig::new("spin");
    config.isolation = Some(FaasletIsolation {
        isolation: Arc::new(isolation),
        limits,
    });
    let mut faaslet = Faaslet::new(&engine, &module, config).unwrap();

    let running = Arc::new(AtomicBool::new(true));
    let seen = {
        let (running, prefix) = (running.clone(), prefix.clone());
        std::thread::spawn(move || {
            let mut seen = false;
            while running.load(Ordering::Relaxed) && !seen {
                seen = !tids_in(&prefix).is_empty();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            seen
        })
    };
    assert_eq!(faaslet.call(b"").unwrap().return_code, 0);
    running.store(false, Ordering::Relaxed);
    assert!(
        seen.join().unwrap(),
        "the calling thread never appeared in the function's cgroup"
    );
    assert!(
        tids_in(&prefix).is_empty(),
        "the thread stayed in the cgroup after the call"
    );
    // The cgroup carries the weight: v1 shares = 50 * 1024 / 100.
    let shares: Vec<String> = task_files(&prefix)
        .iter()
        .filter_map(|t| std::fs::read_to_string(t.with_file_name("cpu.shares")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    assert!(
        shares.contains(&"512".to_string()),
        "cpu.shares found: {shares:?}"
    );
    drop(faaslet);
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
