//! `kelp images import FILE…`: loads image tarballs into the node's
//! containerd by hand (what kelp does at start for `<data-dir>/agent/images/`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::ImagesCommand;
use crate::kubelet::{containerd, images::ImageImporter};

/// Runs an images subcommand.
pub fn run(command: ImagesCommand) -> Result<()> {
    let ImagesCommand::Import {
        files,
        data_dir,
        container_runtime_endpoint,
    } = command;
    let socket = container_runtime_endpoint
        .map(|p| PathBuf::from(p.to_string_lossy().trim_start_matches("unix://")))
        .unwrap_or_else(|| containerd::socket_for(&data_dir));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    runtime.block_on(async {
        let channel = containerd::connect(&socket, Duration::from_secs(5))
            .await
            .context("is kelp (or the runtime at --container-runtime-endpoint) running?")?;
        let importer = ImageImporter::new(channel);
        let scratch = data_dir.join("agent");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        for file in &files {
            for name in importer.import_tarball(file, &scratch).await? {
                println!("imported {name}");
            }
        }
        Ok(())
    })
}
