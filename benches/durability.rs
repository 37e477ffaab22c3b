//! Durability under faults (issue 19), measured: `KELP_BENCH_KILLS` (100)
//! `kill -9`s of `kelp server` at random moments of a mixed write load
//! (creates, updates, deletes of ConfigMaps), each followed by a restart
//! and a check of every acknowledged write (any loss panics). Prints the
//! writes acknowledged, the writes in doubt at a kill, and restart times.
//!
//! Run: `cargo bench --bench durability`. Figures go to docs/PERFORMANCE.md by hand.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Server;

fn main() {
    let kills = std::env::var("KELP_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut server = Server::start();
    let started = std::time::Instant::now();
    let report = common::durability::kill_loop(&mut server, kills, 0x19_2026);
    let mut restarts = report.restarts.clone();
    restarts.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| restarts[((restarts.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "kill -9 loop: {} kills in {:.0} s",
        report.kills,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  writes acknowledged {}, in doubt at a kill {}, objects checked {}; lost: 0",
        report.acknowledged, report.in_doubt, report.checked
    );
    println!(
        "  kill → ready: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
