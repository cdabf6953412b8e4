//! Nothing leaks over thousands of start/stop cycles, and leftovers of a crashed run are
//! removed by the next start. A separate test binary (process), so that the fd count is
//! not disturbed by other tests.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use faaslet_netns::cgroup::list_with_prefix;
use faaslet_netns::net::list_leftovers;
use faaslet_netns::{CgroupLimits, Isolation, IsolationConfig, NetConfig};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One test (not several) so that the phases do not run in parallel and the fd and link
/// counts are exact.
#[test]
fn thousands_of_cycles_leak_nothing_and_stale_leftovers_are_removed() {
    if !need_root("leak test") {
        return;
    }

    // ---- Stale leftovers of a "crashed" run: pid 0 never exists, so they are stale.
    let stale = "ftstale-0-1-0";
    let cpu = Path::new("/sys/fs/cgroup/cpu");
    let have_v1 = cpu.join("cpu.shares").exists();
    if have_v1 {
        std::fs::create_dir_all(cpu.join(stale).join("fn-0")).unwrap();
    }
    let have_ip = need_iproute2("stale namespace cleanup");
    if have_ip {
        ip(&["netns", "add", &format!("{stale}-0")]);
    }
    // Not stale: a name of a live process (ours) with the same prefix is left alone.
    let live = faaslet_netns::Isolation::new(IsolationConfig {
        cgroups: Some(CgroupLimits::default()),
        prefix: "ftstale".into(),
        ..IsolationConfig::default()
    })
    .unwrap();
    let live_cg = live
        .cgroup_for(
            "x",
            &CgroupLimits {
                cpu_weight: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    let iso = Isolation::new(IsolationConfig {
        cgroups: Some(CgroupLimits::default()),
        network: have_ip.then(|| NetConfig {
            pool_size: 1,
            subnet: "10.203.255.0/30".parse().unwrap(),
            ..NetConfig::default()
        }),
        prefix: "ftstale".into(),
        strict: true,
        ..IsolationConfig::default()
    })
    .unwrap();
    assert!(!cpu.join(stale).exists(), "stale cgroup not removed");
    assert!(
        list_leftovers(stale).is_empty(),
        "stale namespace not removed"
    );
    if have_v1 {
        assert!(
            list_with_prefix(live.instance_name()).len() == 1,
            "a live instance's cgroup must survive the stale cleanup"
        );
    }
    drop(iso);
    drop(live_cg);
    drop(live);
    assert!(
        list_with_prefix("ftstale").is_empty(),
        "{:?}",
        list_with_prefix("ftstale")
    );
    assert!(list_leftovers("ftstale").is_empty());

    // ---- Thousands of cgroup cycles.
    let fds_before = fd_count();
    let limits = CgroupLimits {
        cpu_weight: Some(150),
        cpu_max: Some((50_000, 100_000)),
        pids_max: Some(100),
        ..Default::default()
    };
    for i in 0..2000 {
        let iso = Isolation::new(IsolationConfig {
            cgroups: Some(CgroupLimits::default()),
            prefix: "ftleakcg".into(),
            ..IsolationConfig::default()
        })
        .unwrap();
        let cg = iso.cgroup_for("fn", &limits).unwrap();
        {
            let _g = iso.enter(Some(&cg)).unwrap();
        }
        if i % 500 == 0 {
            assert!(
                !list_with_prefix("ftleakcg").is_empty(),
                "cgroups are really created"
            );
        }
    }
    assert!(
        list_with_prefix("ftleakcg").is_empty(),
        "{:?}",
        list_with_prefix("ftleakcg")
    );
    assert_eq!(
        fd_count(),
        fds_before,
        "file descriptors leaked over cgroup cycles"
    );

    // ---- Hundreds of namespace cycles (with shaping, so qdiscs are created too).
    if !have_ip {
        return;
    }
    let links_before = host_links();
    let mut last_links = Vec::new();
    for i in 0..150 {
        let iso = Isolation::new(IsolationConfig {
            cgroups: Some(CgroupLimits::default()),
            network: Some(NetConfig {
                pool_size: 2,
                subnet: "10.203.0.0/24".parse().unwrap(),
                nat: i % 10 == 0,
                rate_mbit: Some(100),
            }),
            prefix: "ftleakns".into(),
            strict: false,
            ..IsolationConfig::default()
        })
        .unwrap();
        assert_eq!(iso.namespaces().len(), 2, "{:?}", iso.report());
        let cg = iso.cgroup_for("fn", &limits).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _g = iso.enter(Some(&cg)).unwrap();
            });
        });
        last_links = iso.namespaces().iter().map(|n| n.host_if.clone()).collect();
    }
    assert!(
        list_leftovers("ftleakns").is_empty(),
        "{:?}",
        list_leftovers("ftleakns")
    );
    assert!(list_with_prefix("ftleakns").is_empty());
    let links_after = host_links();
    assert_eq!(links_before, links_after, "host interfaces leaked");
    assert!(last_links.iter().all(|l| !links_after.contains(l)));
    let nat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output();
    if let Ok(out) = nat {
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(!rules.contains("ftleakns"), "NAT rules leaked: {rules}");
    }
    assert_eq!(
        fd_count(),
        fds_before,
        "file descriptors leaked over namespace cycles"
    );
}
