//! Service proxy rule syncs: 100 Services × 10 endpoints written with
//! `iptables-restore` into a private network namespace (the host's rules
//! are never touched), then the time to sync again after one endpoint
//! changes (a full rebuild, as every pass is), and the rule count.
//!
//! Run as root: `cargo bench --bench proxy`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kelp::network::iptables;
use kelp::proxy::rules;
use serde_json::json;

const SERVICES: usize = 100;
const ENDPOINTS: usize = 10;
const ROUNDS: usize = 20;

fn objects(generation: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for s in 0..SERVICES {
        let name = format!("svc-{s}");
        services.push(Arc::new(
            serde_json::from_value::<Service>(json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"type": "NodePort", "clusterIP": format!("10.43.{}.{}", s / 250, s % 250 + 2),
                         "ports": [{"name": "http", "port": 80, "nodePort": 30000 + s, "protocol": "TCP"}]}
            }))
            .expect("service"),
        ));
        let endpoints: Vec<serde_json::Value> = (0..ENDPOINTS)
            .map(|e| {
                // The first Service's first endpoint moves each generation.
                let last = if s == 0 && e == 0 { 100 + generation % 100 } else { e + 2 };
                json!({"addresses": [format!("10.42.{s}.{last}")], "conditions": {"ready": true}, "nodeName": "bench"})
            })
            .collect();
        slices.push(Arc::new(
            serde_json::from_value::<EndpointSlice>(json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints
            }))
            .expect("slice"),
        ));
    }
    (services, slices)
}

fn sync(generation: usize, existing: &BTreeSet<String>) -> (BTreeSet<String>, usize, f64, f64) {
    let (services, slices) = objects(generation);
    let started = Instant::now();
    let ports = rules::all_service_ports(&services, &slices, "bench");
    let rendered = rules::render(&ports, "10.42.0.0/16", existing);
    let rendering = started.elapsed().as_secs_f64();
    iptables::restore(&rendered.text).expect("iptables-restore");
    let total = started.elapsed().as_secs_f64();
    let count = rendered
        .text
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count();
    (rendered.chains, count, rendering, total)
}

fn main() {
    // A network namespace of our own: the iptables commands this process
    // starts inherit it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): run as root");
    let (mut chains, count, _, first) = sync(0, &BTreeSet::new());
    println!(
        "proxy: first sync of {SERVICES} Services x {ENDPOINTS} endpoints: {count} rules, {} chains, {:.1} ms",
        chains.len(),
        first * 1000.0
    );
    let mut times = Vec::new();
    let mut renders = Vec::new();
    for generation in 1..=ROUNDS {
        let (next, _, rendering, total) = sync(generation, &chains);
        chains = next;
        renders.push(rendering);
        times.push(total);
    }
    times.sort_by(f64::total_cmp);
    renders.sort_by(f64::total_cmp);
    let ms = |v: f64| v * 1000.0;
    println!(
        "proxy: sync after one endpoint change ({ROUNDS} rounds): median {:.1} ms, max {:.1} ms (rendering alone: median {:.2} ms)",
        ms(times[ROUNDS / 2]),
        ms(times[ROUNDS - 1]),
        ms(renders[ROUNDS / 2])
    );
}
