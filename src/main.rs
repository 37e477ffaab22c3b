//! Entry point: dispatches to the command (multi-call by argv[0] later).

use clap::Parser;

/// mimalloc returns freed memory to the system promptly; glibc's per-thread
/// arenas kept the transient memory of large LISTs (1.5 GiB after a few 10k-object
/// lists, measured by benches/api.rs), which a small device cannot afford.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
