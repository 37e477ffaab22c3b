//! NetworkPolicy enforcement on a node (what k3s does with kube-router's
//! policy controller): watch caches of NetworkPolicies, pods and
//! namespaces over the node's client; after any change (a burst makes one
//! pass, 50 ms after it) and every 30 s the node's rules are rebuilt
//! (`rules.rs`, pure) and, when they differ from the last ones written or
//! at the resync, applied with one `iptables-restore --noflush`
//! that touches only kelp's `KELP-NETPOL` and per-pod chains, deleting
//! those no longer used (from an earlier run too). The jumps from FORWARD
//! and INPUT are kept first in their chains.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;

use crate::network::iptables;
use crate::runtime::{Informers, Shutdown};

const RESYNC: Duration = Duration::from_secs(30);
const MARKER: &str = "kelp network policies";

/// A node's policy enforcer.
pub struct PolicyEnforcer {
    /// The node's name (which pods are local).
    pub node: String,
    /// The pod bridge (pods reaching the node come in on it).
    pub bridge: String,
}

/// A pod as the rules see it; None without an address of its own.
fn pod_info(pod: &Pod, node: &str) -> Option<rules::PodInfo> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if spec.host_network == Some(true) || crate::api::values::pods::is_terminal(pod) {
        return None;
    }
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone()?;
            Some((
                name,
                (
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.container_port,
                ),
            ))
        })
        .collect();
    Some(rules::PodInfo {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        ip,
        labels: pod.labels().clone(),
        ports,
        local: spec.node_name.as_deref() == Some(node),
    })
}

impl PolicyEnforcer {
    /// Runs until `shutdown`, reading the node's shared caches.
    pub async fn run(self, informers: Informers, shutdown: Shutdown) -> anyhow::Result<()> {
        shutdown.until(self.enforce(informers)).await;
        Ok(())
    }

    async fn enforce(self, informers: Informers) {
        let (policies, policy_changes) = informers.cache::<NetworkPolicy>();
        let (pods, pod_changes) = informers.cache::<Pod>();
        let (namespaces, namespace_changes) = informers.cache::<Namespace>();
        let changes = futures::stream::select_all([policy_changes, pod_changes, namespace_changes]);
        let mut existing: BTreeSet<String> =
            tokio::task::spawn_blocking(|| iptables::chains("filter"))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| rules::PER_POD_PREFIXES.iter().any(|p| c.starts_with(p)))
                .collect();
        let mut passes = crate::runtime::passes(changes.boxed(), RESYNC, Duration::from_millis(50));
        // What the last successful pass wrote: most pod changes (status,
        // readiness) leave the rules as they were, and need no write.
        let mut written: Option<String> = None;
        while let Some(due) = passes.next().await {
            // Rules from half-filled caches would isolate pods wrongly.
            if !informers.informer::<NetworkPolicy>().filled()
                || !informers.informer::<Pod>().filled()
                || !informers.informer::<Namespace>().filled()
            {
                continue;
            }
            let started = std::time::Instant::now();
            let infos: Vec<rules::PodInfo> = pods
                .state()
                .iter()
                .filter_map(|p| pod_info(p, &self.node))
                .collect();
            let labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect();
            let all: Vec<NetworkPolicy> = policies.state().iter().map(|p| (**p).clone()).collect();
            let rendered = rules::render(&all, &infos, &labels, &existing);
            // A resync with nothing new looks whether the rules are still in
            // place (one iptables-save), and writes them again if not.
            let resync = due == crate::runtime::Due::Resync;
            let bridge = self.bridge.clone();
            if iptables::unchanged(written.as_deref(), &rendered.text, resync, move |text| {
                let jumps = rules::jumps(&bridge);
                let args: Vec<Vec<&str>> = jumps
                    .iter()
                    .map(|(_, args)| args.iter().map(String::as_str).collect())
                    .collect();
                let jumps: Vec<iptables::Jump> = jumps
                    .iter()
                    .zip(&args)
                    .map(|((chain, _), args)| iptables::Jump {
                        table: "filter",
                        chain,
                        args,
                        first: true,
                    })
                    .collect();
                iptables::still_in_place(text, &jumps)
            })
            .await
            {
                continue;
            }
            let text = rendered.text.clone();
            let bridge = self.bridge.clone();
            let applied = tokio::task::spawn_blocking(move || {
                iptables::restore(&text)?;
                for (chain, args) in rules::jumps(&bridge) {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    iptables::ensure_first_in("filter", chain, &args, MARKER)?;
                }
                Ok::<_, String>(())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match applied {
                Ok(()) => {
                    existing = rendered.chains;
                    written = Some(rendered.text);
                    tracing::debug!(
                        policies = all.len(),
                        isolated = existing.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "network policy rules synced"
                    );
                }
                Err(e) => {
                    tracing::warn!(err = %e, "writing network policy rules failed; retrying at the next change or resync")
                }
            }
        }
    }
}
