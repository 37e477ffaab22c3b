//! Snapshots of the SQLite store (k3s's etcd-snapshot idea, for kelp's
//! embedded store) and the checks that find a damaged database.
//!
//! A snapshot is `VACUUM INTO` from a read-only connection: one read
//! transaction, consistent at one revision, never blocking the writer, and
//! compact (no free pages); it works beside a running server. It is written
//! under a temporary name, checked (`quick_check`), synced, then renamed to
//! `<name>-<node>-<unix seconds>.db`, with a JSON sidecar holding its
//! revision. A restore (server stopped) checks the snapshot, moves the old
//! database aside into `state-old-<unix seconds>/`, copies the snapshot in,
//! and raises the revision above anything a client may have seen while
//! marking everything older compacted (each key's latest entry kept), so watchers relist (etcd's
//! `snapshot restore --bump-revision --mark-compacted`).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{Error, Result, Revision};

/// How far a restore raises the revision beyond the newest one known, so
/// that no revision a client saw before is reused for different data.
pub const REVISION_BUMP: Revision = 100_000;

/// One snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Its file name.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
    /// When it was taken (unix seconds, from the name).
    pub created: i64,
    /// The store's revision in it (0 when the sidecar is missing).
    pub revision: Revision,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Where the old database went.
    pub old: PathBuf,
    /// The revision the store continues from.
    pub revision: Revision,
}

fn db(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::Database(format!("{context}: {e}"))
}

/// Checks the database's structure (`PRAGMA quick_check`): a damaged or
/// truncated file, or one that is no database, is [`Error::Corrupt`].
pub fn check(conn: &Connection) -> Result<()> {
    let verdict: std::result::Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match verdict {
        Ok(lines) if lines == ["ok"] => Ok(()),
        Ok(lines) => Err(Error::Corrupt(lines.join("; "))),
        Err(e) => Err(Error::Corrupt(e.to_string())),
    }
}

/// The store's latest revision in a database file.
fn revision_of(conn: &Connection) -> Result<Revision> {
    conn.query_row(super::sqlite::LATEST_REVISION, [], |r| r.get(0))
        .map_err(db)
}

fn open_read_only(path: &Path) -> Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// The file name of a snapshot taken at `unix` seconds.
pub fn file_name(prefix: &str, node: &str, unix: i64) -> String {
    format!("{prefix}-{node}-{unix}.db")
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Takes a snapshot of the database at `db` into `dir`, named after
/// `prefix` and `node`; works while a server uses the database.
pub fn save(db_path: &Path, dir: &Path, prefix: &str, node: &str) -> Result<Snapshot> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let name = file_name(prefix, node, unix);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let source = open_read_only(db_path)?;
    source
        .execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
        .map_err(db)?;
    drop(source);
    let revision = {
        let copy = open_read_only(&tmp)?;
        check(&copy)?;
        revision_of(&copy)?
    };
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    let size = std::fs::metadata(&path)
        .map_err(io("reading", &path))?
        .len();
    let meta = serde_json::json!({
        "revision": revision, "created": unix, "size": size,
        "kelpVersion": env!("CARGO_PKG_VERSION"),
    });
    std::fs::write(sidecar(&path), meta.to_string()).map_err(io("writing", &path))?;
    sync_dir(dir)?;
    Ok(Snapshot {
        name,
        path,
        size,
        created: unix,
        revision,
    })
}

/// The snapshots in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<Snapshot>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("reading", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".db") {
            continue;
        }
        let Some(created) = name
            .trim_end_matches(".db")
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let revision = std::fs::read(sidecar(&path))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["revision"].as_i64())
            .unwrap_or(0);
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        found.push(Snapshot {
            name,
            path,
            size,
            created,
            revision,
        });
    }
    found.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    Ok(found)
}

/// Which of `snapshots` (newest first) retention removes: those named
/// with `prefix` beyond the newest `keep` (k3s's rule, per prefix).
pub fn beyond_retention<'a>(
    snapshots: &'a [Snapshot],
    prefix: &str,
    keep: usize,
) -> Vec<&'a Snapshot> {
    snapshots
        .iter()
        .filter(|s| s.name.starts_with(&format!("{prefix}-")))
        .skip(keep)
        .collect()
}

/// Removes the snapshots of `prefix` beyond the newest `keep`.
pub fn prune(dir: &Path, prefix: &str, keep: usize) -> Result<Vec<Snapshot>> {
    let all = list(dir)?;
    let gone: Vec<Snapshot> = beyond_retention(&all, prefix, keep)
        .into_iter()
        .cloned()
        .collect();
    for snapshot in &gone {
        std::fs::remove_file(&snapshot.path).map_err(io("removing", &snapshot.path))?;
        let _ = std::fs::remove_file(sidecar(&snapshot.path));
    }
    Ok(gone)
}

/// The snapshot `name` in `dir`, or a path given as is.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let given = Path::new(name);
    for candidate in [
        given.to_path_buf(),
        dir.join(name),
        dir.join(format!("{name}.db")),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::Database(format!(
        "no snapshot {name:?} in {} (see `kelp store snapshot list`)",
        dir.display()
    )))
}

/// Replaces the database at `db` with `snapshot` (the server must be
/// stopped; the caller holds the database's lock).
pub fn restore(db_path: &Path, snapshot: &Path) -> Result<Restored> {
    let snapshot_revision = {
        let conn = open_read_only(snapshot)?;
        check(&conn)?;
        revision_of(&conn)?
    };
    // The newest revision the old database knew, if it can still tell.
    let old_revision = open_read_only(db_path)
        .and_then(|c| revision_of(&c))
        .unwrap_or(0);
    let dir = db_path.parent().unwrap_or(Path::new("."));
    let unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let old = dir.join(format!("state-old-{unix}"));
    std::fs::create_dir_all(&old).map_err(io("creating", &old))?;
    let file = db_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("{file}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, old.join(format!("{file}{suffix}")))
                .map_err(io("moving", &from))?;
        }
    }
    let tmp = dir.join(format!(".{file}.restore"));
    std::fs::copy(snapshot, &tmp).map_err(io("copying", snapshot))?;
    let revision = old_revision.max(snapshot_revision) + REVISION_BUMP;
    {
        let conn = Connection::open(&tmp).map_err(db)?;
        // Everything before `revision` counts as compacted: a watch from
        // an older revision gets 410 and relists.
        conn.execute_batch("PRAGMA journal_mode=DELETE;")
            .map_err(db)?;
        // Compacted up to the snapshot's newest revision (each key's latest
        // entry stays, so lists at later revisions still find every key).
        super::sqlite::compact_through(&conn, snapshot_revision, revision).map_err(db)?;
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, db_path).map_err(io("renaming", &tmp))?;
    sync_dir(dir)?;
    Ok(Restored { old, revision })
}

/// Scheduled snapshots: what the server was told.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The database.
    pub db: PathBuf,
    /// The snapshots' directory.
    pub dir: PathBuf,
    /// The name prefix (k3s's `etcd-snapshot`).
    pub prefix: String,
    /// The node's name, in file names.
    pub node: String,
    /// When (cron, five fields, local time).
    pub cron: croner::Cron,
    /// How many of them to keep.
    pub retention: usize,
}

/// Parses a five-field cron schedule (`--etcd-snapshot-schedule-cron`).
pub fn parse_cron(text: &str) -> std::result::Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("{text:?}: {e}"))
}

/// Takes the scheduled snapshots (and prunes) until the process ends.
pub async fn run_schedule(schedule: Schedule) {
    let zone = jiff::tz::TimeZone::system();
    loop {
        let now = jiff::Timestamp::now().to_zoned(zone.clone());
        let Ok(next) = schedule.cron.find_next_occurrence(&now, false) else {
            tracing::warn!("the snapshot schedule has no next time; no more snapshots");
            return;
        };
        let wait = next.timestamp().duration_since(now.timestamp());
        tokio::time::sleep(std::time::Duration::try_from(wait).unwrap_or_default()).await;
        let job = schedule.clone();
        let taken = tokio::task::spawn_blocking(move || {
            let taken = save(&job.db, &job.dir, &job.prefix, &job.node)?;
            let pruned = prune(&job.dir, &job.prefix, job.retention)?;
            Ok::<_, Error>((taken, pruned.len()))
        })
        .await;
        match taken {
            Ok(Ok((taken, pruned))) => tracing::info!(
                snapshot = %taken.path.display(), bytes = taken.size, revision = taken.revision, pruned,
                "datastore snapshot saved"
            ),
            Ok(Err(e)) => tracing::error!(err = %e, "taking the scheduled datastore snapshot"),
            Err(e) => tracing::error!(err = %e, "taking the scheduled datastore snapshot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    fn snapshot(name: &str, created: i64) -> Snapshot {
        Snapshot {
            name: name.into(),
            path: PathBuf::from(name),
            size: 0,
            created,
            revision: 0,
        }
    }

    #[test]
    fn retention_keeps_the_newest_of_each_prefix() {
        let all = vec![
            snapshot("etcd-snapshot-n-30.db", 30),
            snapshot("on-demand-n-25.db", 25),
            snapshot("etcd-snapshot-n-20.db", 20),
            snapshot("etcd-snapshot-n-10.db", 10),
        ];
        let gone: Vec<&str> = beyond_retention(&all, "etcd-snapshot", 2)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(gone, ["etcd-snapshot-n-10.db"]);
        assert!(beyond_retention(&all, "on-demand", 1).is_empty());
    }

    #[tokio::test]
    async fn a_snapshot_taken_while_serving_restores_with_a_higher_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db/state.db");
        let store = SqliteStore::open(&path).unwrap();
        store.create("/registry/a", b"1".to_vec()).await.unwrap();
        let taken = save(&path, &dir.path().join("snapshots"), "etcd-snapshot", "n").unwrap();
        assert_eq!(taken.revision, 1);
        store.create("/registry/b", b"2".to_vec()).await.unwrap();
        store.close();
        let listed = list(&dir.path().join("snapshots")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revision, 1);
        let restored = restore(&path, &listed[0].path).unwrap();
        assert_eq!(restored.revision, 2 + REVISION_BUMP);
        assert!(restored.old.join("state.db").exists());
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.get("/registry/a").await.unwrap().is_some());
        assert!(store.get("/registry/b").await.unwrap().is_none());
        let rev = store.create("/registry/c", b"3".to_vec()).await.unwrap();
        assert_eq!(rev, restored.revision + 1);
        assert!(matches!(
            store.watch("/registry/", 2).await,
            Err(Error::Compacted { .. })
        ));
    }

    #[test]
    fn a_damaged_file_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE t (x BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000) INSERT INTO t SELECT randomblob(200) FROM n;",
            )
            .unwrap();
            check(&conn).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for b in &mut bytes[4096..len / 2] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert!(matches!(check(&conn), Err(Error::Corrupt(_))));
        std::fs::write(&path, b"not a database at all, not at all").unwrap();
        let conn = Connection::open(&path).unwrap();
        assert!(matches!(check(&conn), Err(Error::Corrupt(_))));
    }
}
