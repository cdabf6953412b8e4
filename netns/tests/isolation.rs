//! Isolation behaviour: CPU shares, loopback isolation, bandwidth limits, v2 threaded
//! cgroups, strict mode. Root-only tests print a SKIPPED line when not root.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use faaslet_netns::{
    CgroupLimits, CgroupVersion, Isolation, IsolationConfig, IsolationError, NetConfig,
};

fn cgroup_only(prefix: &str) -> IsolationConfig {
    IsolationConfig {
        cgroups: Some(CgroupLimits::default()),
        prefix: prefix.to_string(),
        ..IsolationConfig::default()
    }
}

fn net_only(prefix: &str, subnet: &str, pool: usize, rate: Option<u32>) -> IsolationConfig {
    IsolationConfig {
        network: Some(NetConfig {
            pool_size: pool,
            subnet: subnet.parse().unwrap(),
            nat: false,
            rate_mbit: rate,
        }),
        strict: true,
        prefix: prefix.to_string(),
        ..IsolationConfig::default()
    }
}

/// Two CPU-bound threads pinned to one core, in cgroups with weights 1:3, get CPU time
/// roughly 1:3.
#[test]
fn cpu_weights_share_one_core() {
    if !need_root("cpu_weights_share_one_core") {
        return;
    }
    let iso = Isolation::new(cgroup_only("ftcpu")).unwrap();
    let Some(version) = iso.cgroup_version() else {
        eprintln!(
            "SKIPPED cpu_weights_share_one_core: no usable cgroups: {:?}",
            iso.report()
        );
        return;
    };
    let light = iso
        .cgroup_for(
            "light",
            &CgroupLimits {
                cpu_weight: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    let heavy = iso
        .cgroup_for(
            "heavy",
            &CgroupLimits {
                cpu_weight: Some(300),
                ..Default::default()
            },
        )
        .unwrap();
    if iso.report().iter().any(|d| d.feature.starts_with("cpu")) {
        eprintln!("SKIPPED cpu_weights_share_one_core: {:?}", iso.report());
        return;
    }
    let cpu = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
    let barrier = Barrier::new(2);
    let spin = Duration::from_secs(2);
    let (t_light, t_heavy) = std::thread::scope(|s| {
        let run = |cg| {
            let iso = &iso;
            let barrier = &barrier;
            move || {
                pin_to_cpu(cpu);
                let _g = iso.enter(Some(cg)).unwrap();
                barrier.wait();
                let start_cpu = thread_cpu_time();
                let deadline = Instant::now() + spin;
                let mut x = 0u64;
                while Instant::now() < deadline {
                    for i in 0..1000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                }
                thread_cpu_time() - start_cpu
            }
        };
        let a = s.spawn(run(&light));
        let b = s.spawn(run(&heavy));
        (a.join().unwrap(), b.join().unwrap())
    });
    let ratio = t_heavy.as_secs_f64() / t_light.as_secs_f64();
    eprintln!(
        "cgroup {version}: cpu time light {t_light:?}, heavy {t_heavy:?}, ratio {ratio:.2} (expected 3)"
    );
    assert!(
        (2.2..=4.0).contains(&ratio),
        "CPU share ratio {ratio:.2} not within 2.2..4.0"
    );
}

/// A thread inside a namespace cannot reach a service on the host's loopback.
#[test]
fn namespace_cannot_reach_host_loopback() {
    if !need_root("namespace_cannot_reach_host_loopback") || !need_iproute2("loopback") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let iso = Isolation::new(net_only("ftloop", "10.201.0.0/24", 2, None)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = iso.enter(None).unwrap();
            assert!(g.netns_name().is_some());
            let r = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
            let err = r.expect_err("host loopback must be unreachable from a namespace");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::NetworkUnreachable
                        | ErrorKind::TimedOut
                ),
                "unexpected error {err:?}"
            );
            // The namespace's own loopback works.
            let own = TcpListener::bind("127.0.0.1:0").unwrap();
            TcpStream::connect(own.local_addr().unwrap()).unwrap();
            drop(g);
            // Back in the host namespace: reachable again.
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        })
        .join()
        .unwrap();
    });
    // Other threads were never moved.
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
}

/// Receives on `listener` until the peer closes; returns the rate in Mbit/s measured
/// after a warm-up of `skip` (to exclude the token bucket's initial burst).
fn measure_receive(listener: TcpListener, skip: Duration) -> f64 {
    let (mut conn, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let t0 = Instant::now();
    let mut counted = 0u64;
    let mut t_start = None;
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if t0.elapsed() >= skip {
            if t_start.is_none() {
                t_start = Some(Instant::now());
            } else {
                counted += n as u64;
            }
        }
    }
    let secs = t_start.unwrap().elapsed().as_secs_f64();
    counted as f64 * 8.0 / secs / 1e6
}

fn send_for(mut conn: TcpStream, dur: Duration) {
    let buf = vec![0x5au8; 64 * 1024];
    let end = Instant::now() + dur;
    while Instant::now() < end {
        conn.write_all(&buf).unwrap();
    }
}

/// The rate under test: `FAASLET_TEST_RATE_MBIT`, default 50.
fn rate_mbit() -> u32 {
    std::env::var("FAASLET_TEST_RATE_MBIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn check_rate(direction: &str, measured: f64) {
    let rate = rate_mbit();
    let err = (measured - f64::from(rate)) / f64::from(rate);
    eprintln!(
        "{direction}: limit {rate} Mbit/s, measured TCP goodput {measured:.2} Mbit/s ({:+.1}%)",
        err * 100.0
    );
    assert!(
        err.abs() <= 0.10,
        "{direction}: {measured:.2} Mbit/s is not within 10% of {rate}"
    );
}

/// A bulk transfer out of a namespace is held to the configured rate (within 10%).
#[test]
fn bandwidth_limit_holds_for_egress() {
    if !need_root("bandwidth_limit_holds_for_egress") || !need_iproute2("bandwidth") {
        return;
    }
    let iso = Isolation::new(net_only("ftbwout", "10.202.0.0/24", 1, Some(rate_mbit()))).unwrap();
    let host = iso.namespaces()[0].host_addr;
    let listener = TcpListener::bind(SocketAddr::from((host, 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let measured = std::thread::scope(|s| {
        let rx = s.spawn(|| measure_receive(listener, Duration::from_millis(1000)));
        s.spawn(|| {
            let _g = iso.enter(None).unwrap();
            let conn = TcpStream::connect((host, port)).unwrap();
            send_for(conn, Duration::from_secs(5));
        })
        .join()
        .unwrap();
        rx.join().unwrap()
    });
    check_rate("egress (namespace -> host)", measured);
}

/// A bulk transfer into a namespace is held to the configured rate (within 10%).
#[test]
fn bandwidth_limit_holds_for_ingress() {
    if !need_root("bandwidth_limit_holds_for_ingress") || !need_iproute2("bandwidth") {
        return;
    }
    let iso = Isolation::new(net_only("ftbwin", "10.202.1.0/24", 1, Some(rate_mbit()))).unwrap();
    let ns = iso.namespaces()[0].ns_addr;
    let (tx_port, rx_port) = std::sync::mpsc::channel();
    let measured = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let _g = iso.enter(None).unwrap();
            let listener = TcpListener::bind(SocketAddr::from((ns, 0))).unwrap();
            tx_port.send(listener.local_addr().unwrap().port()).unwrap();
            measure_receive(listener, Duration::from_millis(1000))
        });
        let port = rx_port.recv().unwrap();
        let conn = TcpStream::connect((ns, port)).unwrap();
        send_for(conn, Duration::from_secs(5));
        rx.join().unwrap()
    });
    check_rate("ingress (host -> namespace)", measured);
}

/// Joining and leaving the cgroup is visible in /proc/thread-self/cgroup, per thread.
#[test]
fn threads_join_and_leave_cgroup() {
    if !need_root("threads_join_and_leave_cgroup") {
        return;
    }
    let iso = Isolation::new(cgroup_only("ftjoin")).unwrap();
    if iso.cgroup_version().is_none() {
        eprintln!("SKIPPED threads_join_and_leave_cgroup: {:?}", iso.report());
        return;
    }
    let cg = iso
        .cgroup_for(
            "f",
            &CgroupLimits {
                cpu_weight: Some(50),
                pids_max: Some(64),
                ..Default::default()
            },
        )
        .unwrap();
    let before = thread_cgroups();
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = iso.enter(Some(&cg)).unwrap();
            let inside = thread_cgroups();
            assert!(inside.contains(iso.instance_name()), "{inside}");
            // Another thread of the process is unaffected.
            drop(g);
            assert!(!thread_cgroups().contains(iso.instance_name()));
        });
        assert!(!thread_cgroups().contains(iso.instance_name()));
    });
    assert_eq!(before, thread_cgroups());
}

/// cgroup v2 threaded mode works for thread placement even where the cpu controller is
/// bound to v1 (as on the development machine); the missing controller is reported.
#[test]
fn v2_threaded_cgroups_place_threads() {
    if !need_root("v2_threaded_cgroups_place_threads") {
        return;
    }
    let cfg = IsolationConfig {
        cgroup_version: Some(CgroupVersion::V2),
        ..cgroup_only("ftv2")
    };
    let iso = match Isolation::new(cfg) {
        Ok(i) if i.cgroup_version() == Some(CgroupVersion::V2) => i,
        other => {
            eprintln!("SKIPPED v2_threaded_cgroups_place_threads: no cgroup2: {other:?}");
            return;
        }
    };
    let cg = iso
        .cgroup_for(
            "f",
            &CgroupLimits {
                cpu_weight: Some(200),
                memory_max: Some(1 << 30),
                ..Default::default()
            },
        )
        .unwrap();
    let report = iso.report();
    assert!(
        report.iter().any(|d| d.feature == "memory.max"),
        "{report:?}"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = iso.enter(Some(&cg)).unwrap();
            let line = thread_cgroups()
                .lines()
                .find(|l| l.starts_with("0::"))
                .unwrap()
                .to_string();
            assert!(
                line.contains(&format!("{}/{}", iso.instance_name(), cg.name())),
                "{line}"
            );
            drop(g);
            let line = thread_cgroups()
                .lines()
                .find(|l| l.starts_with("0::"))
                .unwrap()
                .to_string();
            assert!(!line.contains(iso.instance_name()), "{line}");
        });
    });
    assert!(
        cg.add_process(std::process::id()).is_err(),
        "v2 threaded cgroups take no processes"
    );
}

/// With `strict`, a limit that cannot be applied is an error, not a report.
#[test]
fn strict_mode_turns_degradation_into_error() {
    if !need_root("strict_mode_turns_degradation_into_error") {
        return;
    }
    let cfg = IsolationConfig {
        strict: true,
        ..cgroup_only("ftstrict")
    };
    let iso = match Isolation::new(cfg) {
        Ok(i) => i,
        Err(IsolationError::Degraded(d)) => {
            eprintln!("no cgroups at all, strict error as expected: {d:?}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    // Memory limits never apply to threads (v1: charged per process; v2: domain controller).
    let r = iso.cgroup_for(
        "f",
        &CgroupLimits {
            memory_max: Some(1 << 30),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(IsolationError::Degraded(_))), "{r:?}");
    assert!(iso.report().is_empty());
}

/// Without strict, the same is reported once and the engine goes on.
#[test]
fn degradations_are_reported_once() {
    if !need_root("degradations_are_reported_once") {
        return;
    }
    let iso = Isolation::new(cgroup_only("ftreport")).unwrap();
    let limits = CgroupLimits {
        memory_max: Some(1 << 30),
        ..Default::default()
    };
    let _a = iso.cgroup_for("a", &limits).unwrap();
    let _b = iso.cgroup_for("b", &limits).unwrap();
    let n = iso
        .report()
        .iter()
        .filter(|d| d.feature == "memory.max")
        .count();
    assert_eq!(n, 1, "{:?}", iso.report());
}

/// The pool hands out each namespace to one thread at a time.
#[test]
fn pool_exhaustion_is_an_error() {
    if !need_root("pool_exhaustion_is_an_error") || !need_iproute2("pool") {
        return;
    }
    let iso = Isolation::new(net_only("ftpool", "10.201.1.0/24", 1, None)).unwrap();
    let g = iso.enter(None).unwrap();
    // enter does not nest.
    assert!(matches!(
        iso.enter(None),
        Err(IsolationError::AlreadyEntered)
    ));
    // While the only namespace is taken, another thread cannot enter.
    let second = std::thread::scope(|s| s.spawn(|| iso.enter(None).map(|_| ())).join().unwrap());
    assert!(second.is_err());
    drop(g);
    std::thread::scope(|s| {
        s.spawn(|| iso.enter(None).map(|_| ()).unwrap())
            .join()
            .unwrap()
    });
}

/// Invalid configuration is rejected before anything is created.
#[test]
fn invalid_config_is_rejected() {
    let bad_prefix = IsolationConfig {
        prefix: "bad-prefix/..".into(),
        ..IsolationConfig::default()
    };
    assert!(matches!(
        Isolation::new(bad_prefix),
        Err(IsolationError::Config(_))
    ));
    let bad_weight = IsolationConfig {
        cgroups: Some(CgroupLimits {
            cpu_weight: Some(0),
            ..Default::default()
        }),
        ..IsolationConfig::default()
    };
    assert!(Isolation::new(bad_weight).is_err());
}

#[allow(dead_code)]
fn _assert_sync() {
    fn is_sync<T: Sync + Send>() {}
    is_sync::<Isolation>();
}

/// Without privileges the engine still runs: isolation reports what it could not apply
/// and `enter` is a no-op; strict mode refuses to start.
#[test]
fn unprivileged_engine_still_runs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        unprivileged_checks();
        return;
    }
    // As root: re-run this test binary as `nobody`.
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "unprivileged_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "run as an unprivileged user by unprivileged_engine_still_runs"]
fn unprivileged_child() {
    // SAFETY: geteuid has no preconditions.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
    unprivileged_checks();
}

fn unprivileged_checks() {
    let cfg = IsolationConfig {
        cgroups: Some(CgroupLimits::default()),
        network: Some(NetConfig {
            pool_size: 1,
            subnet: "10.201.2.0/24".parse().unwrap(),
            ..NetConfig::default()
        }),
        prefix: "ftnoroot".into(),
        ..IsolationConfig::default()
    };
    let iso = Isolation::new(cfg.clone()).unwrap();
    let report = iso.report();
    assert!(report.iter().any(|d| d.feature == "cgroups"), "{report:?}");
    assert!(report.iter().any(|d| d.feature == "network"), "{report:?}");
    let cg = iso
        .cgroup_for(
            "f",
            &CgroupLimits {
                cpu_weight: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    let g = iso.enter(Some(&cg)).unwrap();
    assert!(g.netns_name().is_none());
    drop(g);
    let strict = IsolationConfig {
        strict: true,
        ..cfg
    };
    assert!(matches!(
        Isolation::new(strict),
        Err(IsolationError::Degraded(_))
    ));
}
