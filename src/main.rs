//! Entry point: dispatches by the name the binary was invoked as (`kelp-cni`,
//! `loopback`, `pause`, the helm job's `entry`), else by subcommand.

use kelp::cli::{self, Cli, Command};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("kelp");
    match invoked_as {
        "kelp-cni" => std::process::exit(kelp::network::cni::run()),
        "loopback" => std::process::exit(kelp::network::cni::run_loopback()),
        "pause" => std::process::exit(kelp::kubelet::pause::run()),
        "entry" => std::process::exit(kelp::helm::entry::run(&args[1..])),
        _ => {}
    }
    let cli: Cli = cli::config::parse(&args)?;
    match cli.command {
        Command::Server(args) => cli::server::run(*args),
        Command::Agent(args) => cli::agent::run(*args),
        Command::Token { command } => cli::token::run(command),
        Command::Kubectl { args } => cli::server::kubectl(&args),
        Command::Images { command } => cli::images::run(command),
        Command::SecretsEncrypt { command } => cli::secrets_encrypt::run(command),
        Command::Certificate { command } => cli::certificate::run(command),
        Command::Store { command } => cli::store::run(command),
        Command::Version => {
            println!(
                "kelp version v{} ({})",
                env!("CARGO_PKG_VERSION"),
                option_env!("KELP_GIT_COMMIT").unwrap_or("unknown")
            );
            println!("Kubernetes API v1.{}", kelp::apiserver::KUBERNETES_MINOR);
            Ok(())
        }
    }
}
