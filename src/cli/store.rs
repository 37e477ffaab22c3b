//! `kelp store snapshot save|list|restore|prune`: the embedded datastore's
//! snapshots (see `store::snapshot`). `save` works while kelp runs;
//! `restore` refuses while it does (the database's lock).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{SnapshotCommand, SnapshotPlace, StoreCommand};
use crate::store::snapshot;

/// The database of a data dir.
pub fn database(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("server/db/state.db")
}

/// The snapshots' directory: the flag, else `<data-dir>/server/db/snapshots`.
pub fn snapshot_dir(data_dir: &std::path::Path, flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned()
        .unwrap_or_else(|| data_dir.join("server/db/snapshots"))
}

/// Runs a `kelp store` subcommand.
pub fn run(command: StoreCommand) -> Result<()> {
    let StoreCommand::Snapshot { command, place } = command;
    let SnapshotPlace {
        data_dir,
        etcd_snapshot_dir,
    } = place;
    let db = database(&data_dir);
    let dir = snapshot_dir(&data_dir, etcd_snapshot_dir.as_ref());
    match command {
        SnapshotCommand::Save { name } => {
            anyhow::ensure!(db.exists(), "no datastore at {}", db.display());
            let node = super::node::hostname().to_lowercase();
            let taken = snapshot::save(&db, &dir, &name, &node)
                .with_context(|| format!("snapshotting {}", db.display()))?;
            println!(
                "snapshot {} saved: {} bytes at revision {}",
                taken.path.display(),
                taken.size,
                taken.revision
            );
        }
        SnapshotCommand::List => {
            println!("{:<48} {:>10} {:<25} REVISION", "NAME", "SIZE", "CREATED");
            for s in snapshot::list(&dir)? {
                let created = time::OffsetDateTime::from_unix_timestamp(s.created)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<48} {:>10} {:<25} {}",
                    s.name, s.size, created, s.revision
                );
            }
        }
        SnapshotCommand::Restore { snapshot: name } => {
            let path = snapshot::find(&dir, &name)?;
            let _lock = crate::store::sqlite::lock(&db)?;
            let restored = snapshot::restore(&db, &path)
                .with_context(|| format!("restoring {}", path.display()))?;
            println!(
                "restored {} into {}; the old database is in {}; the store continues at revision {} (clients relist). Start kelp.",
                path.display(),
                db.display(),
                restored.old.display(),
                restored.revision
            );
        }
        SnapshotCommand::Prune { name, retention } => {
            for gone in snapshot::prune(&dir, &name, retention)? {
                println!("removed {}", gone.name);
            }
        }
    }
    Ok(())
}
