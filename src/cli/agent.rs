//! `kelp agent`: joins a server with a token and runs a node against it
//! until SIGTERM/SIGINT.

use anyhow::{Context, Result};

use super::AgentArgs;
use crate::pki::bootstrap_token::JoinToken;

/// Runs the agent until a signal.
pub fn run(args: AgentArgs) -> Result<()> {
    // SAFETY: nothing has started a thread yet (logging and the runtime come next).
    let notifier = unsafe { super::notify::Notifier::from_env() };
    super::node::start_logging(&args.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    runtime.block_on(run_agent(args, notifier))
}

async fn run_agent(args: AgentArgs, notifier: super::notify::Notifier) -> Result<()> {
    let text = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("--token-file {}", file.display()))?,
        (None, None) => {
            anyhow::bail!("kelp agent needs --token or --token-file (KELP_TOKEN, KELP_TOKEN_FILE)")
        }
    };
    let token = JoinToken::parse(&text).map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    anyhow::ensure!(
        args.server.starts_with("https://"),
        "--server {:?}: the server's URL is https://HOST:PORT",
        args.server
    );
    let node = args.node.name();
    let ip = args.node.ip(None);
    let joined = crate::agent::join(&args.server, &token, &args.data_dir, &node).await?;
    let config = args
        .node
        .agent_config(&args.data_dir, &joined.cluster, ip, false)?;
    let dns = args.node.dns_config(&joined.cluster);
    let agent =
        crate::agent::run_joined(joined, config, dns, true, crate::telemetry::Metrics::new())
            .await?;
    tracing::info!(node = %node, pod_cidr = %agent.pod_cidr, "kelp agent is running");
    notifier.ready("node registered");
    super::server::shutdown_signal(notifier).await;
    agent.stop().await;
    tracing::info!("kelp agent stopped");
    Ok(())
}
