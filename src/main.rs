//! Entry point: dispatches to the command (multi-call by argv[0] later).

use clap::Parser;
use kelp::cli::{self, Cli, Command};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    cli::load_config_file(&args)?;
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => cli::server::run(*args),
        Command::Kubectl { args } => cli::server::kubectl(&args),
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
