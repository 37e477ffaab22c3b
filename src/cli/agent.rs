//! `kelp agent`: joins a server with a token and runs a node against it
//! until SIGTERM/SIGINT.

use anyhow::{Context, Result};

use super::AgentArgs;
use crate::pki::bootstrap_token::JoinToken;

/// Runs the agent until a signal.
pub fn run(args: AgentArgs) -> Result<()> {
    let telemetry = args.telemetry.clone();
    super::node::run_daemon(&telemetry, |notifier| run_agent(args, notifier))
}

async fn run_agent(args: AgentArgs, notifier: super::notify::Notifier) -> Result<()> {
    let text = super::node::join_token(&args.token, &args.token_file)?
        .context("kelp agent needs --token or --token-file (KELP_TOKEN, KELP_TOKEN_FILE)")?;
    let token = JoinToken::parse(&text).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    anyhow::ensure!(
        args.server.starts_with("https://"),
        "--server {:?}: the server's URL is https://HOST:PORT",
        args.server
    );
    let node = args.node.name();
    let ip = args.node.ip(None);
    // Every client of the agent reaches the servers through its load
    // balancer, which follows them as they come and go.
    let balancer = crate::agent::balancer::ServerBalancer::start(
        &args.server,
        args.lb_server_port,
        &args.data_dir,
    )
    .await?;
    let joined = crate::agent::join(&balancer.url(), &token, &args.data_dir, &node).await?;
    let kubelet = joined.kubelet.clone();
    let config = args
        .node
        .agent_config(&args.data_dir, &joined.cluster, ip, false)?;
    let dns = args.node.dns_config(&joined.cluster);
    let metrics = crate::telemetry::Metrics::new();
    let mut components = crate::runtime::Components::new();
    components.start("load-balancer", |shutdown| {
        balancer.follow(kubelet, shutdown)
    });
    let (registered, pod_cidr) = tokio::sync::oneshot::channel();
    components.start("node", |shutdown| {
        crate::agent::run_joined(joined, config, dns, metrics, registered, shutdown)
    });
    let stopped = super::server::shutdown_signal(notifier.clone());
    tokio::pin!(stopped);
    let failed = tokio::select! {
        pod_cidr = pod_cidr => match pod_cidr {
            Ok(pod_cidr) => {
                tracing::info!(node = %node, pod_cidr = %pod_cidr, "kelp agent is running");
                notifier.ready("node registered");
                (&mut stopped).await;
                false
            }
            // The node's error is logged as it ends.
            Err(_) => true,
        },
        () = &mut stopped => false,
    };
    let aborted = components.stop(super::server::COMPONENTS_GRACE).await;
    if !aborted.is_empty() {
        tracing::warn!(components = ?aborted, "stopped without finishing");
    }
    anyhow::ensure!(!failed, "the node failed to start");
    tracing::info!("kelp agent stopped");
    Ok(())
}
