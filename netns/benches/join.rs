//! Cost per Faaslet call of joining and leaving isolation (one `enter` plus the guard's
//! drop), for cgroup only, network namespace only, and both; plus the one-off cost of
//! creating a pooled namespace.
//!
//! Needs root: `cargo bench -p faaslet-netns --bench join`.

// `criterion_main!` defines an undocumented `pub fn main`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use faaslet_netns::{CgroupLimits, Isolation, IsolationConfig, NetConfig};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        cpu_weight: Some(100),
        ..CgroupLimits::default()
    }
}

fn net(subnet: &str, pool_size: usize) -> NetConfig {
    NetConfig {
        pool_size,
        subnet: subnet.parse().unwrap(),
        nat: false,
        rate_mbit: Some(100),
    }
}

fn join_leave(c: &mut Criterion) {
    if !is_root() {
        eprintln!("SKIPPED join benchmark: needs root");
        return;
    }
    let mut g = c.benchmark_group("enter_leave");

    let cg_only = Isolation::new(IsolationConfig {
        cgroups: Some(limits()),
        prefix: "fbenchcg".into(),
        strict: true,
        ..IsolationConfig::default()
    })
    .unwrap();
    let cg = cg_only.cgroup_for("bench", &limits()).unwrap();
    g.bench_function("cgroup", |b| {
        b.iter(|| drop(cg_only.enter(Some(&cg)).unwrap()))
    });

    let ns_only = Isolation::new(IsolationConfig {
        network: Some(net("10.204.0.0/24", 1)),
        prefix: "fbenchns".into(),
        strict: true,
        ..IsolationConfig::default()
    })
    .unwrap();
    g.bench_function("netns", |b| b.iter(|| drop(ns_only.enter(None).unwrap())));

    let both = Isolation::new(IsolationConfig {
        cgroups: Some(limits()),
        network: Some(net("10.204.1.0/24", 1)),
        prefix: "fbenchboth".into(),
        strict: true,
        ..IsolationConfig::default()
    })
    .unwrap();
    let cg2 = both.cgroup_for("bench", &limits()).unwrap();
    g.bench_function("cgroup+netns", |b| {
        b.iter(|| drop(both.enter(Some(&cg2)).unwrap()))
    });
    g.finish();
}

fn create_pool(c: &mut Criterion) {
    if !is_root() {
        return;
    }
    let mut g = c.benchmark_group("create");
    g.sample_size(10);
    g.bench_function("pool_of_8_shaped_namespaces_create_and_destroy", |b| {
        b.iter(|| {
            Isolation::new(IsolationConfig {
                network: Some(net("10.204.2.0/24", 8)),
                prefix: "fbenchpool".into(),
                strict: true,
                ..IsolationConfig::default()
            })
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, join_leave, create_pool);
criterion_main!(benches);
