//! SQLite store: WAL mode, one writer thread with group commit, a small pool of
//! read connections, and an in-memory broadcast of committed events.
//!
//! Durability: a write is acknowledged once its transaction is in the WAL
//! (`synchronous=NORMAL`, as k3s's kine runs SQLite): it survives a crash or
//! `kill -9` of kelp (the bytes are in the kernel's page cache), and only a
//! power cut can lose the newest commits — after which, seen as a new boot,
//! the store continues its revisions well above any a client may have seen
//! and marks the older ones compacted, so nothing is handed out twice.
//! Concurrent writes share one transaction. The writer checkpoints
//! (PASSIVE: readers never wait) between batches every
//! [`CHECKPOINT_COMMITS`] commits, or [`CHECKPOINT_IDLE`] after the first of
//! fewer, instead of SQLite's every 1,000 WAL pages inside a COMMIT: at
//! idle a page rewritten by every Lease renewal reaches the database file
//! once per 10 minutes, not every few minutes; fewer fsyncs and rewritten
//! pages are what an SD card lives on.
//!
//! Coalesced updates (`update_coalesced`: Lease renewals) are the one
//! exception to "acknowledged = in the WAL": the writer holds them in
//! memory ([`super::held`]) until its next commit, at most 5½ minutes.
//! A `kill -9` may lose those renewals (never anything else); the store
//! then continues its revisions [`super::snapshot::REVISION_BUMP`] higher
//! at the next start, so none of the lost ones is handed out again.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{broadcast, oneshot};

use super::disk_writes::{self, DiskWrites};
use super::held::Held;
use super::{
    Error, Event, EventKind, KeyValue, ListPage, Result, Revision, Store, WatchStream, prefix_end,
};

/// Schema migrations, applied in order; a shipped one is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: latest values, the event log, and store metadata.
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE log (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, kind INTEGER NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL);
     CREATE INDEX log_key ON log(key, rev);
     CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta VALUES ('compacted', 0);",
];

/// The latest revision: the newest log entry, or the compaction point if the log is empty.
/// ('floor': where revisions continue after a start that found held writes lost.)
pub(crate) const LATEST_REVISION: &str = "SELECT MAX(COALESCE((SELECT MAX(rev) FROM log), 0), (SELECT value FROM meta WHERE name='compacted'), COALESCE((SELECT value FROM meta WHERE name='floor'), 0))";

/// Latest values in a key range (?4, the revision, is unused but keeps one parameter list).
const LIST_LATEST: &str = "SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ?1 AND key < ?2 AND ?4 = ?4 ORDER BY key LIMIT ?3";

/// Values in a key range as they were at revision ?4: unchanged keys from `kv`,
/// keys changed (or deleted) since from their last log entry at or before ?4.
const LIST_AT: &str = "SELECT key, value, create_rev, mod_rev FROM (
        SELECT key, value, create_rev, mod_rev FROM kv WHERE key >= ?1 AND key < ?2 AND mod_rev <= ?4
        UNION ALL
        SELECT l.key, l.value, l.create_rev, l.rev FROM log l
         WHERE l.key >= ?1 AND l.key < ?2 AND l.rev <= ?4 AND l.kind != 2
           AND l.rev = (SELECT MAX(x.rev) FROM log x WHERE x.key = l.key AND x.rev <= ?4)
           AND NOT EXISTS (SELECT 1 FROM kv k WHERE k.key = l.key AND k.mod_rev <= ?4)
    ) ORDER BY key LIMIT ?3";

/// Deletes, between compaction points ?1 and ?2, the tombstones written in
/// (?1, ?2] and every entry superseded by an entry written in (?1, ?2].
const COMPACT_RANGE: &str = "DELETE FROM log WHERE rev IN (
        SELECT rev FROM log WHERE rev > ?1 AND rev <= ?2 AND kind = 2
        UNION
        SELECT older.rev FROM log newer JOIN log older ON older.key = newer.key AND older.rev < newer.rev
         WHERE newer.rev > ?1 AND newer.rev <= ?2)";

/// Revisions one compaction transaction covers at most.
const COMPACT_STEP: Revision = 250;

/// How many writes one transaction takes at most.
const MAX_BATCH: usize = 512;
/// Read connections.
const READERS: usize = 4;
/// Commits between checkpoints under load (a few MB of WAL; each
/// checkpoint then copies little, so no write waits long behind one).
const CHECKPOINT_COMMITS: u64 = 250;
/// How long committed writes wait in the WAL before a checkpoint when few come.
const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_secs(600);

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    writer: mpsc::Sender<Request>,
    /// The writer thread: it closes the database once every sender is
    /// gone, then lets go of the lock ([`SqliteStore::close`] waits).
    writer_thread: std::thread::JoinHandle<()>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
    events: broadcast::Sender<Arc<Event>>,
    revision: Arc<AtomicI64>,
    /// Coalesced updates not committed yet (the writer's; reads look here).
    held: Arc<Mutex<Held>>,
    /// The writer's disk writes by cause.
    disk_writes: DiskWrites,
}

enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    /// An update the writer may hold until its next commit.
    Hold {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Forget history in (the compaction point, `revision`].
    Compact {
        revision: Revision,
    },
}

type Reply = oneshot::Sender<Result<(Revision, Option<KeyValue>)>>;

/// What one operation did: its revision, the key's new (or last) value, the value before.
type OpOutcome = (Revision, Option<KeyValue>, Option<Vec<u8>>);

struct Request {
    op: Op,
    reply: Reply,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Database(format!("creating {}: {e}", dir.display())))?;
        }
        let lock = lock(path)?;
        let mut conn = Connection::open(path).map_err(db)?;
        // A damaged file is found now, not at the first read that hits it.
        let started = std::time::Instant::now();
        super::snapshot::check(&conn)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "datastore checked"
        );
        incremental_vacuum_mode(&conn)?;
        // The WAL file goes back to at most 16 MB once a checkpoint completes.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;
             PRAGMA journal_size_limit=16777216; PRAGMA busy_timeout=10000;",
        )
        .map_err(db)?;
        migrate(&mut conn)?;
        guard_power_loss(&conn)?;
        recover_held(&conn)?;
        let revision: Revision = conn
            .query_row(LATEST_REVISION, [], |r| r.get(0))
            .map_err(db)?;
        let revision = Arc::new(AtomicI64::new(revision));
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path).map_err(db)?;
            reader
                .execute_batch("PRAGMA busy_timeout=10000; PRAGMA query_only=1;")
                .map_err(db)?;
            readers.push(Mutex::new(reader));
        }
        let (events, _) = broadcast::channel(super::live::CAPACITY);
        let (requests_tx, requests) = mpsc::channel();
        let held = Arc::new(Mutex::new(Held::default()));
        let disk_writes = DiskWrites::default();
        let writer = Writer {
            events: events.clone(),
            revision: revision.clone(),
            held: held.clone(),
            marked: false,
            disk_writes: disk_writes.clone(),
        };
        // The lock (one kelp per database) stays with the writer until the
        // database is closed: a reopen never meets a writer still finishing.
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let _lock = lock;
                write_loop(conn, requests, writer);
            })
            .map_err(|e| Error::Database(format!("starting writer thread: {e}")))?;
        Ok(Self {
            writer: requests_tx,
            writer_thread,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            events,
            revision,
            held,
            disk_writes,
        })
    }

    /// Closes the store and waits until it is closed: held writes
    /// committed, freed space given back, the WAL checkpointed, the lock
    /// released. (Dropping the store does the same without waiting.)
    pub fn close(self) {
        let Self {
            writer,
            writer_thread,
            readers,
            ..
        } = self;
        drop((writer, readers));
        let _ = writer_thread.join();
    }

    /// Serves the writer's disk writes by cause in `metrics`.
    pub fn register_metrics(&self, metrics: &crate::telemetry::Metrics) {
        self.disk_writes.register(metrics);
    }

    async fn submit(&self, op: Op) -> Result<(Revision, Option<KeyValue>)> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request { op, reply })
            .map_err(|_| Error::Database("writer thread is gone".into()))?;
        answer
            .await
            .map_err(|_| Error::Database("writer thread dropped a request".into()))?
    }

    /// Runs `f` on a read connection in tokio's blocking pool, so SQLite never
    /// stalls a runtime worker: a free connection if there is one (a GET need
    /// not wait behind a long LIST page), else the next in turn.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let count = self.readers.len();
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % count;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let free = (0..count).find_map(|i| readers[(index + i) % count].try_lock().ok());
            let conn = match free {
                Some(conn) => conn,
                None => readers[index]
                    .lock()
                    .map_err(|_| Error::Database("reader lock poisoned".into()))?,
            };
            f(&conn)
        })
        .await
        .map_err(|e| Error::Database(format!("read task failed: {e}")))?
    }
}

fn db(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            Error::Corrupt(e.to_string())
        }
        _ => Error::Database(e.to_string()),
    }
}

/// Takes the database's lock file (`PATH.lock`) exclusively, without
/// waiting: a second kelp, or a restore, on a database in use fails.
pub fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(|e| Error::Database(format!("opening {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| Error::Locked(path.display().to_string()))
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db)?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(step).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_version VALUES (?1)",
            params![index as i64 + 1],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

/// The compaction point: history at or before it is gone.
fn compaction_point(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| {
        r.get(0)
    })
}

/// Forgets history through `through` (like etcd, each live key keeps its
/// latest entry, so lists at any later revision still find it; older
/// entries and tombstones go) and raises the compaction point to `point`
/// (`through`, or higher where revisions are to continue beyond it). Rows
/// at or before the previous point are already one per live key: only
/// the entries written since, and those they supersede, are looked at.
pub(crate) fn compact_through(
    conn: &Connection,
    through: Revision,
    point: Revision,
) -> rusqlite::Result<()> {
    let from = compaction_point(conn)?;
    if through > from {
        conn.execute(COMPACT_RANGE, params![from, through])?;
    }
    conn.execute(
        "UPDATE meta SET value=MAX(value, ?1) WHERE name='compacted'",
        params![point],
    )?;
    Ok(())
}

/// Moves the newest commits out of the reach of a lost power cut's
/// reordering: when the machine booted since the last open, the store may
/// have lost its newest commits (synchronous=NORMAL), so its revisions go
/// on [`super::snapshot::REVISION_BUMP`] higher with everything older
/// compacted (watchers relist, no revision is reused).
fn guard_power_loss(conn: &Connection) -> Result<()> {
    let Ok(boot) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") else {
        return Ok(());
    };
    let hex: String = boot.trim().chars().filter(|c| *c != '-').take(15).collect();
    let Ok(boot) = i64::from_str_radix(&hex, 16) else {
        return Ok(());
    };
    let stored: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name='boot'", [], |r| r.get(0))
        .optional()
        .map_err(db)?;
    if stored.is_some_and(|stored| stored != boot) {
        let latest: Revision = conn
            .query_row(LATEST_REVISION, [], |r| r.get(0))
            .map_err(db)?;
        let floor = latest + super::snapshot::REVISION_BUMP;
        compact_through(conn, latest, floor).map_err(db)?;
        tracing::info!(
            revision = floor,
            "the machine restarted since the datastore was last open: revisions continue higher, older ones compacted"
        );
    }
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('boot', ?1)",
        params![boot],
    )
    .map_err(db)?;
    Ok(())
}

/// When the last run held writes and did not close the store (killed),
/// the revisions of those it lost may have been seen: revisions continue
/// [`super::snapshot::REVISION_BUMP`] higher (a floor, nothing compacted: a
/// watcher that saw a lost revision simply receives everything after it).
fn recover_held(conn: &Connection) -> Result<()> {
    let held: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE name='held'", [], |r| r.get(0))
        .optional()
        .map_err(db)?;
    if held != Some(1) {
        return Ok(());
    }
    let latest: Revision = conn
        .query_row(LATEST_REVISION, [], |r| r.get(0))
        .map_err(db)?;
    let floor = latest + super::snapshot::REVISION_BUMP;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
    let written = conn
        .execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('floor', ?1)",
            params![floor],
        )
        .and_then(|_| conn.execute("UPDATE meta SET value=0 WHERE name='held'", []))
        .and_then(|_| conn.execute_batch("COMMIT"));
    if let Err(e) = written {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(db(e));
    }
    tracing::info!(
        revision = floor,
        "the datastore was not closed while it held Lease renewals in memory: revisions continue higher"
    );
    Ok(())
}

/// At a clean stop: everything into the database file and the WAL emptied
/// (waiting at most a second for the last writes), so a stopped kelp leaves
/// one self-contained file.
pub fn checkpoint_at_stop(path: &Path) -> Result<()> {
    let conn = Connection::open(path).map_err(db)?;
    conn.execute_batch("PRAGMA busy_timeout=1000;")
        .map_err(db)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(db)
}

/// Free pages beyond which the writer gives space back to the filesystem.
const FREE_PAGES_KEPT: i64 = 1024;
/// Pages one step of giving space back moves at most (1 MB: a few
/// milliseconds; a request waits for one step at most).
const VACUUM_STEP: i64 = 256;
/// Databases up to this size are rebuilt once at open to give space back
/// from then on (`auto_vacuum` can only change with a full VACUUM).
const CONVERT_LIMIT: i64 = 256 << 20;

/// Space freed by compaction and deletes goes back to the filesystem
/// (`auto_vacuum=INCREMENTAL`, stepped by the writer): a new database is
/// made so; an older one of up to [`CONVERT_LIMIT`] is rebuilt once.
fn incremental_vacuum_mode(conn: &Connection) -> Result<()> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(db)?;
    if mode == 2 {
        return Ok(());
    }
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(db)?;
    let size: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if tables > 0 && size > CONVERT_LIMIT {
        tracing::warn!(
            bytes = size,
            "the datastore cannot give freed space back (made before kelp did); `kelp store snapshot save` then `restore` rebuilds it"
        );
        return Ok(());
    }
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")
        .map_err(db)?;
    if tables > 0 {
        let started = std::time::Instant::now();
        conn.execute_batch("VACUUM;").map_err(db)?;
        tracing::info!(
            bytes = size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "datastore rebuilt once to give freed space back from now on"
        );
    }
    Ok(())
}

/// Gives up to [`VACUUM_STEP`] free pages back when more than
/// [`FREE_PAGES_KEPT`] are free; whether more is left to give.
fn give_space_back(conn: &Connection) -> bool {
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap_or(0);
    if free <= FREE_PAGES_KEPT {
        return false;
    }
    let step = (free - FREE_PAGES_KEPT).min(VACUUM_STEP);
    // Stepped to the end: each step of this pragma frees one page.
    let freed = conn
        .prepare(&format!("PRAGMA incremental_vacuum({step})"))
        .and_then(|mut stmt| {
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
            Ok(())
        });
    if let Err(e) = freed {
        tracing::warn!(err = %e, "giving the datastore's free space back");
        return false;
    }
    free - VACUUM_STEP > FREE_PAGES_KEPT
}

/// A PASSIVE checkpoint on the writer's own connection, between batches:
/// no write can append to the WAL meanwhile, so it copies everything no
/// reader still needs and the next write starts the WAL over (a checkpoint
/// from another connection under a steady write load never catches up, and
/// the WAL grows without bound). Readers never wait for it.
fn checkpoint(conn: &Connection, commits: &mut u64, disk_writes: &DiskWrites) {
    let started = std::time::Instant::now();
    let result = disk_writes.measure_as(disk_writes::CHECKPOINT, || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    });
    match result {
        Ok((frames, copied)) => tracing::debug!(
            frames,
            copied,
            commits = *commits,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "datastore checkpoint"
        ),
        Err(e) => tracing::warn!(err = %e, "checkpointing the datastore's WAL"),
    }
    *commits = 0;
}

/// What the writer thread shares with the store's readers.
struct Writer {
    events: broadcast::Sender<Arc<Event>>,
    revision: Arc<AtomicI64>,
    held: Arc<Mutex<Held>>,
    /// The database says writes may be held (set by the first commit that
    /// holds one, cleared when the store closes).
    marked: bool,
    disk_writes: DiskWrites,
}

/// The writer thread: takes every waiting request into one transaction
/// (or, for a batch of coalesced updates only, holds them in memory).
fn write_loop(mut conn: Connection, requests: mpsc::Receiver<Request>, mut writer: Writer) {
    // Commits since the last checkpoint, and when the first of them came.
    let mut commits: u64 = 0;
    let mut since = std::time::Instant::now();
    // A request that came while space was being given back.
    let mut waiting: Option<Request> = None;
    loop {
        let held_due = writer.held.lock().map(|h| h.due()).unwrap_or(None);
        let checkpoint_due = (commits > 0).then(|| since + CHECKPOINT_IDLE);
        let due = match (held_due, checkpoint_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let first = if let Some(first) = waiting.take() {
            first
        } else if let Some(due) = due {
            let wait = due.saturating_duration_since(std::time::Instant::now());
            match requests.recv_timeout(wait) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout)
                    if held_due.is_some_and(|d| d <= std::time::Instant::now()) =>
                {
                    // Held writes waited long enough: a commit of their own.
                    if commit(&mut conn, &[], &mut writer, None).is_ok() {
                        if commits == 0 {
                            since = std::time::Instant::now();
                        }
                        commits += 1;
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Quiet: give freed space back, a step at a time, until a
                    // request comes (under load freed pages are reused
                    // instead), then checkpoint the commits and the steps.
                    while writer
                        .disk_writes
                        .measure_as(disk_writes::FREEING_SPACE, || give_space_back(&conn))
                    {
                        match requests.try_recv() {
                            Ok(request) => {
                                waiting = Some(request);
                                break;
                            }
                            Err(mpsc::TryRecvError::Empty) => {}
                            Err(mpsc::TryRecvError::Disconnected) => break,
                        }
                    }
                    checkpoint(&conn, &mut commits, &writer.disk_writes);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match requests.recv() {
                Ok(first) => first,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        if writer.marked && batch.iter().all(|r| matches!(r.op, Op::Hold { .. })) {
            hold_batch(&conn, batch, &writer);
            continue;
        }
        match commit(&mut conn, &batch, &mut writer, None) {
            Ok((results, committed)) => {
                for event in committed {
                    // No receivers is fine: nobody is watching.
                    let _ = writer.events.send(Arc::new(event));
                }
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
                // After the replies: the batch does not wait for it.
                if commits == 0 {
                    since = std::time::Instant::now();
                }
                commits += 1;
                if commits >= CHECKPOINT_COMMITS {
                    checkpoint(&conn, &mut commits, &writer.disk_writes);
                }
            }
            Err(e) => {
                // The transaction rolled back: nothing of the batch is kept.
                let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::DiskFull);
                if full {
                    tracing::error!(err = %e, "the datastore's disk is full: writes fail until space is freed");
                }
                for req in batch {
                    let error = match full {
                        true => Error::SpaceExceeded(e.to_string()),
                        false => Error::Database(e.to_string()),
                    };
                    let _ = req.reply.send(Err(error));
                }
            }
        }
    }
    // The store closed: what is held committed (and the mark cleared),
    // freed space back, and what is left in the WAL into the database.
    if let Err(e) = close_held(&mut conn, &mut writer) {
        tracing::warn!(err = %e, "committing held writes at close");
    }
    while give_space_back(&conn) {}
    checkpoint(&conn, &mut commits, &writer.disk_writes);
}

/// Holds a batch of coalesced updates in memory: checked against the
/// newest value (held or committed), given their revisions, broadcast and
/// answered without a commit.
fn hold_batch(conn: &Connection, batch: Vec<Request>, writer: &Writer) {
    let mut held = writer.held.lock().expect("held writes");
    for req in batch {
        let Op::Hold {
            key,
            value,
            expected,
        } = req.op
        else {
            continue;
        };
        let old = match held.current(&key) {
            Some(kv) => Ok(Some(kv.clone())),
            None => current(conn, &key).map_err(db),
        };
        let rev = writer.revision.load(Ordering::SeqCst) + 1;
        let result = old
            .and_then(|old| super::updated(old, &key, value, expected, rev))
            .map(|(kv, old)| {
                let event = Event {
                    kind: EventKind::Updated,
                    kv: kv.clone(),
                    prev: Some(old.value),
                };
                held.hold(event.clone());
                writer.revision.store(rev, Ordering::SeqCst);
                let _ = writer.events.send(Arc::new(event));
                (rev, Some(kv))
            });
        let _ = req.reply.send(result);
    }
}

/// One transaction: what is held first (its revisions are the oldest),
/// then the batch; what was held is forgotten once committed. The `held`
/// mark is set (`Some(true)`) or cleared (`Some(false)`) with it as `mark`
/// says, and set in any case by the first batch that holds a write.
fn commit(
    conn: &mut Connection,
    batch: &[Request],
    writer: &mut Writer,
    mark: Option<bool>,
) -> rusqlite::Result<BatchOutcome> {
    let mut rev = writer.revision.load(Ordering::SeqCst);
    let held = writer.held.lock().expect("held writes").events().to_vec();
    let first_hold = !writer.marked && batch.iter().any(|r| matches!(r.op, Op::Hold { .. }));
    let mark = mark.or(first_hold.then_some(true));
    let mut causes = std::collections::BTreeMap::<String, u64>::new();
    let keys = batch.iter().map(|r| match &r.op {
        Op::Create { key, .. }
        | Op::Update { key, .. }
        | Op::Hold { key, .. }
        | Op::Delete { key, .. } => disk_writes::cause_of(key),
        Op::Compact { .. } => disk_writes::COMPACTION,
    });
    // A held key's newest value is the one row it writes.
    let held_keys: std::collections::BTreeSet<&str> =
        held.iter().map(|e| e.kv.key.as_str()).collect();
    for cause in keys.chain(held_keys.into_iter().map(disk_writes::cause_of)) {
        *causes.entry(cause.to_string()).or_default() += 1;
    }
    let outcome = writer
        .disk_writes
        .measure(&causes, || apply_batch(conn, batch, &mut rev, &held, mark))?;
    writer.revision.store(rev, Ordering::SeqCst);
    writer.held.lock().expect("held writes").clear();
    if let Some(mark) = mark {
        writer.marked = mark;
    }
    Ok(outcome)
}

/// At close: what is held committed and the mark cleared, so the next
/// start knows nothing was lost.
fn close_held(conn: &mut Connection, writer: &mut Writer) -> rusqlite::Result<()> {
    if writer.marked {
        commit(conn, &[], writer, Some(false))?;
    }
    Ok(())
}

type BatchOutcome = (Vec<Result<(Revision, Option<KeyValue>)>>, Vec<Event>);

fn apply_batch(
    conn: &mut Connection,
    batch: &[Request],
    rev: &mut Revision,
    held: &[Event],
    mark: Option<bool>,
) -> rusqlite::Result<BatchOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Each held key's newest value only: the renewals before it were
    // answered and broadcast already, and a Lease's history is worth no
    // disk (at idle they were a third of a commit's pages). A watch that
    // resumes from one of their revisions gets the newest.
    let newest: std::collections::HashMap<&str, Revision> = held
        .iter()
        .map(|e| (e.kv.key.as_str(), e.kv.mod_revision))
        .collect();
    for event in held {
        if newest.get(event.kv.key.as_str()) == Some(&event.kv.mod_revision) {
            write(&tx, &event.kv, EventKind::Updated)?;
        }
    }
    if let Some(mark) = mark {
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('held', ?1)",
            params![i64::from(mark)],
        )?;
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut committed = Vec::new();
    for req in batch {
        let result = apply_op(&tx, &req.op, rev)?;
        if let Ok((_, Some(kv), prev)) = &result {
            let kind = match &req.op {
                Op::Create { .. } => EventKind::Created,
                Op::Update { .. } | Op::Hold { .. } => EventKind::Updated,
                _ => EventKind::Deleted,
            };
            committed.push(Event {
                kind,
                kv: kv.clone(),
                prev: prev.clone(),
            });
        }
        results.push(result.map(|(rev, kv, _)| (rev, kv)));
    }
    tx.commit()?;
    Ok((results, committed))
}

/// The latest value of `key` (a transaction derefs to its connection).
fn current(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.query_row(
        "SELECT value, create_rev, mod_rev FROM kv WHERE key=?1",
        params![key],
        |r| {
            Ok(KeyValue {
                key: key.to_string(),
                value: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        },
    )
    .optional()
}

/// One operation inside the batch transaction. Outer error = database failure
/// (aborts the batch); inner = this operation's own outcome.
fn apply_op(
    tx: &rusqlite::Transaction,
    op: &Op,
    rev: &mut Revision,
) -> rusqlite::Result<Result<OpOutcome>> {
    match op {
        Op::Create { key, value } => {
            let kv = match super::created(current(tx, key)?, key, value.clone(), *rev + 1) {
                Ok(kv) => kv,
                Err(e) => return Ok(Err(e)),
            };
            *rev += 1;
            write(tx, &kv, EventKind::Created)?;
            Ok(Ok((*rev, Some(kv), None)))
        }
        Op::Update {
            key,
            value,
            expected,
        }
        | Op::Hold {
            key,
            value,
            expected,
        } => {
            let (kv, old) =
                match super::updated(current(tx, key)?, key, value.clone(), *expected, *rev + 1) {
                    Ok(update) => update,
                    Err(e) => return Ok(Err(e)),
                };
            *rev += 1;
            write(tx, &kv, EventKind::Updated)?;
            Ok(Ok((*rev, Some(kv), Some(old.value))))
        }
        Op::Delete { key, expected } => {
            let kv = match super::deleted(current(tx, key)?, key, *expected, *rev + 1) {
                Ok(kv) => kv,
                Err(e) => return Ok(Err(e)),
            };
            *rev += 1;
            write(tx, &kv, EventKind::Deleted)?;
            Ok(Ok((*rev, Some(kv), None)))
        }
        Op::Compact { revision } => {
            compact_through(tx, *revision, *revision)?;
            Ok(Ok((*rev, None, None)))
        }
    }
}

fn write(tx: &rusqlite::Transaction, kv: &KeyValue, kind: EventKind) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO log (rev, key, kind, value, create_rev) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            kv.mod_revision,
            kv.key,
            kind.code(),
            kv.value,
            kv.create_revision
        ],
    )?;
    if kind == EventKind::Deleted {
        tx.execute("DELETE FROM kv WHERE key=?1", params![kv.key])?;
    } else {
        tx.execute(
            "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)",
            params![kv.key, kv.value, kv.create_revision, kv.mod_revision],
        )?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // Held values are cleared only after their commit: a miss here finds
        // the value committed.
        if let Some(kv) = self.held.lock().expect("held writes").current(key) {
            return Ok(Some(kv.clone()));
        }
        let key = key.to_string();
        self.read(move |conn| current(conn, &key).map_err(db)).await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let (start, end) = (prefix.to_string(), prefix_end(prefix));
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM kv WHERE key >= ?1 AND key < ?2")
                .and_then(|mut stmt| stmt.query_row(params![start, end], |r| r.get(0)))
                .map_err(db)
        })
        .await
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<ListPage> {
        let start = start_after
            .map(|s| format!("{s}\0"))
            .unwrap_or_else(|| prefix.to_string());
        let end = prefix_end(prefix);
        let fetch = if limit == 0 { -1 } else { limit as i64 + 1 };
        // Held writes, taken before the rows: one committed meanwhile is in
        // the rows too, and the newer of the two wins.
        let (held, newest_held) = {
            let held = self.held.lock().expect("held writes");
            (held.events_after(&start, &end, 0), held.newest())
        };
        self.read(move |conn| {
            // Read revision and rows in one read transaction so they agree.
            conn.execute_batch("BEGIN").map_err(db)?;
            let result = (|| {
                let committed: Revision = conn
                    .query_row(LATEST_REVISION, [], |r| r.get(0))
                    .map_err(db)?;
                let latest = committed.max(newest_held.unwrap_or(0));
                let revision = at.unwrap_or(latest).min(latest);
                let sql = if revision >= committed {
                    LIST_LATEST
                } else {
                    let compacted: Revision = conn
                        .query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| {
                            r.get(0)
                        })
                        .map_err(db)?;
                    if revision < compacted {
                        return Err(Error::Compacted {
                            requested: revision,
                            compacted,
                        });
                    }
                    LIST_AT
                };
                let mut stmt = conn.prepare_cached(sql).map_err(db)?;
                let mut items = stmt
                    .query_map(params![start, end, fetch, revision], |r| {
                        Ok(KeyValue {
                            key: r.get(0)?,
                            value: r.get(1)?,
                            create_revision: r.get(2)?,
                            mod_revision: r.get(3)?,
                        })
                    })
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)?;
                let more = limit != 0 && items.len() > limit;
                items.truncate(if limit == 0 { items.len() } else { limit });
                super::held::overlay(&held, &mut items, revision);
                Ok(ListPage {
                    items,
                    revision,
                    more,
                })
            })();
            let _ = conn.execute_batch("COMMIT");
            result
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        Ok(self
            .submit(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?
            .0)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        Ok(self
            .submit(Op::Update {
                key: key.to_string(),
                value,
                expected,
            })
            .await?
            .0)
    }

    async fn update_coalesced(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision> {
        Ok(self
            .submit(Op::Hold {
                key: key.to_string(),
                value,
                expected,
            })
            .await?
            .0)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let (rev, kv) = self
            .submit(Op::Delete {
                key: key.to_string(),
                expected,
            })
            .await?;
        let kv = kv.ok_or_else(|| Error::Database("delete returned no value".into()))?;
        Ok((rev, kv))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::SeqCst))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading the backlog so nothing falls between them.
        let live = self.events.subscribe();
        let backlog_prefix = prefix.to_string();
        let end = prefix_end(prefix);
        // Held events, taken before the log is read: newer than anything
        // committed then; one committed meanwhile is in the log as well.
        let held = self
            .held
            .lock()
            .expect("held writes")
            .events_after(prefix, &end, after);
        let mut backlog = self
            .read(move |conn| {
                let compacted: Revision = conn
                    .query_row("SELECT value FROM meta WHERE name='compacted'", [], |r| r.get(0))
                    .map_err(db)?;
                if after < compacted {
                    return Err(Error::Compacted { requested: after, compacted });
                }
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT l.rev, l.key, l.kind, l.value, l.create_rev,
                                (SELECT p.value FROM log p WHERE p.key = l.key AND p.rev < l.rev ORDER BY p.rev DESC LIMIT 1)
                         FROM log l WHERE l.rev > ?1 AND l.key >= ?2 AND l.key < ?3 ORDER BY l.rev",
                    )
                    .map_err(db)?;
                stmt.query_map(params![after, backlog_prefix, end], |r| {
                    let kind = EventKind::from_code(r.get(2)?);
                    Ok(Event {
                        kind,
                        kv: KeyValue { key: r.get(1)?, value: r.get(3)?, create_revision: r.get(4)?, mod_revision: r.get(0)? },
                        prev: if kind == EventKind::Updated { r.get(5)? } else { None },
                    })
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)
            })
            .await?;
        let committed = backlog.last().map(|e| e.kv.mod_revision).unwrap_or(after);
        backlog.extend(held.into_iter().filter(|e| e.kv.mod_revision > committed));
        Ok(super::live::stream(backlog, after, prefix, live))
    }

    /// In steps of [`COMPACT_STEP`] revisions, each its own transaction, so
    /// writes go on between them (kine's way): a long history never holds
    /// the writer for long.
    async fn compact(&self, revision: Revision) -> Result<()> {
        let from = self.read(|c| compaction_point(c).map_err(db)).await?;
        let mut point = from;
        while point < revision {
            point = (point + COMPACT_STEP).min(revision);
            self.submit(Op::Compact { revision: point }).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let rev = {
            let store = SqliteStore::open(&path).expect("open");
            let rev = store.create("/r/a", b"1".to_vec()).await.expect("create");
            store.close();
            rev
        };
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await.expect("rev"), rev);
        let next = store.create("/r/b", b"2".to_vec()).await.expect("create");
        assert_eq!(next, rev + 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compaction_in_steps_keeps_every_retained_revision_readable() {
        let (_dir, store) = open();
        // Creates, updates and deletes over 40 keys, 3,000 revisions.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let key = format!("/k/{:02}", next() % 40);
            match store.get(&key).await.expect("get") {
                None => {
                    store.create(&key, b"0".to_vec()).await.expect("create");
                }
                Some(kv) if next() % 4 == 0 => {
                    store.delete(&key, None).await.expect("delete");
                    let _ = kv;
                }
                Some(kv) => {
                    let value = (next() % 1000).to_string().into_bytes();
                    store
                        .update(&key, value, kv.mod_revision)
                        .await
                        .expect("update");
                }
            }
        }
        let latest = store.current_revision().await.expect("rev");
        let mut before = Vec::new();
        for rev in (2500..=latest).step_by(37) {
            before.push((
                rev,
                store
                    .list_at("/k/", None, 0, Some(rev))
                    .await
                    .expect("list")
                    .items,
            ));
        }
        store.compact(2500).await.expect("compact");
        for (rev, items) in before {
            let after = store
                .list_at("/k/", None, 0, Some(rev))
                .await
                .expect("list")
                .items;
            assert_eq!(after, items, "list at {rev}");
        }
        assert!(matches!(
            store.list_at("/k/", None, 0, Some(2499)).await,
            Err(Error::Compacted { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn space_freed_by_deletes_and_compaction_goes_back_to_the_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).expect("open");
        let size = || std::fs::metadata(&path).expect("db").len();
        for n in 0..1500 {
            store
                .create(&format!("/r/{n}"), vec![b'x'; 8000])
                .await
                .expect("create");
        }
        for n in 0..1500 {
            store
                .delete(&format!("/r/{n}"), None)
                .await
                .expect("delete");
        }
        let latest = store.current_revision().await.expect("rev");
        store.compact(latest).await.expect("compact");
        // Enough commits for checkpoints, each giving some space back.
        for n in 0..1000 {
            store
                .create(&format!("/s/{n}"), b"1".to_vec())
                .await
                .expect("create");
        }
        let peak = size();
        store.close();
        assert!(size() < peak, "closing gives the space back");
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(reopened.count("/s/").await.expect("count"), 1000);
        let free: i64 = Connection::open(&path)
            .expect("open")
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .expect("freelist");
        assert!(free <= FREE_PAGES_KEPT + VACUUM_STEP, "{free} pages free");
        assert!(size() < 12 << 20, "{} bytes after deleting 12 MB", size());
    }

    #[tokio::test]
    async fn a_new_boot_moves_revisions_past_what_a_power_cut_could_lose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let rev = {
            let store = SqliteStore::open(&path).expect("open");
            let rev = store.create("/r/a", b"1".to_vec()).await.expect("create");
            store.close();
            rev
        };
        // As if the database was last open under another boot.
        Connection::open(&path)
            .expect("open")
            .execute("UPDATE meta SET value = value + 1 WHERE name='boot'", [])
            .expect("another boot");
        let store = SqliteStore::open(&path).expect("reopen");
        let now = store.current_revision().await.expect("rev");
        assert_eq!(now, rev + crate::store::snapshot::REVISION_BUMP);
        assert!(store.get("/r/a").await.expect("get").is_some());
        assert!(matches!(
            store.watch("/r/", rev - 1).await,
            Err(Error::Compacted { .. })
        ));
        store.close();
        // The same boot again: nothing moves.
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await.expect("rev"), now);
    }

    #[tokio::test]
    async fn closing_checkpoints_the_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).expect("open");
        for n in 0..50 {
            store
                .create(&format!("/r/{n}"), vec![b'x'; 1000])
                .await
                .expect("create");
        }
        // Commits stay in the WAL (no checkpoint inside COMMIT).
        let wal = dir.path().join("state.db-wal");
        assert!(std::fs::metadata(&wal).expect("wal").len() > 50 * 1000);
        let db_file = || std::fs::metadata(&path).expect("db").len();
        assert!(db_file() < 50 * 1000, "checkpointed inside a commit");
        // Closing the store checkpoints: the pages reach the database file.
        store.close();
        assert!(db_file() >= 50 * 1000, "{} bytes", db_file());
        let reopened = SqliteStore::open(&path).expect("reopen");
        assert_eq!(reopened.count("/r/").await.expect("count"), 50);
    }

    /// The lease's committed mod revision, read as another process would.
    fn committed_revision(path: &Path, key: &str) -> Revision {
        Connection::open(path)
            .expect("open")
            .query_row("SELECT mod_rev FROM kv WHERE key=?1", [key], |r| r.get(0))
            .expect("committed row")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn held_renewals_are_read_at_once_and_committed_with_the_next_write() {
        let (dir, store) = open();
        let path = dir.path().join("state.db");
        let key = "/leases/kube-node-lease/n1";
        let created = store.create(key, b"r0".to_vec()).await.expect("create");
        // The first coalesced write of a run is committed (it marks the store).
        let first = store
            .update_coalesced(key, b"r1".to_vec(), created)
            .await
            .expect("first");
        assert_eq!(committed_revision(&path, key), first);
        let held = store
            .update_coalesced(key, b"r2".to_vec(), first)
            .await
            .expect("held");
        assert_eq!(committed_revision(&path, key), first, "held, not committed");
        // Every read sees it.
        let got = store.get(key).await.expect("get").expect("some");
        assert_eq!((got.value.as_slice(), got.mod_revision), (&b"r2"[..], held));
        let page = store.list("/leases/", None, 0).await.expect("list");
        assert_eq!(page.items[0].value, b"r2");
        assert_eq!(page.revision, held);
        assert_eq!(store.current_revision().await.expect("rev"), held);
        let earlier = store
            .list_at("/leases/", None, 0, Some(first))
            .await
            .expect("list at");
        assert_eq!(earlier.items[0].value, b"r1");
        let mut watch = store.watch("/leases/", first).await.expect("watch");
        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!(
            (event.kv.mod_revision, event.prev),
            (held, Some(b"r1".to_vec()))
        );
        // Preconditions see the held value.
        assert!(matches!(
            store.update_coalesced(key, b"x".to_vec(), first).await,
            Err(Error::Conflict { .. })
        ));
        // Any committed write takes what is held with it, in order.
        let other = store.create("/cm/a", b"a".to_vec()).await.expect("create");
        assert!(other > held);
        assert_eq!(committed_revision(&path, key), held);
        let after = store.list("/leases/", None, 0).await.expect("list");
        assert_eq!((after.items[0].mod_revision, after.revision), (held, other));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn held_renewals_wait_at_most_their_period() {
        let (dir, store) = open();
        let path = dir.path().join("state.db");
        let key = "/leases/kube-node-lease/n1";
        let mut rev = store.create(key, b"r0".to_vec()).await.expect("create");
        for n in 1..=3 {
            rev = store
                .update_coalesced(key, format!("r{n}").into_bytes(), rev)
                .await
                .expect("renew");
        }
        assert!(committed_revision(&path, key) < rev);
        tokio::time::sleep(super::super::held::HOLD_AT_MOST * 3).await;
        assert_eq!(committed_revision(&path, key), rev);
        // The log keeps the create, the first renewal (committed: it marks
        // the store) and the newest; the one between was never written.
        let logged: Vec<Revision> = Connection::open(&path)
            .expect("open")
            .prepare("SELECT rev FROM log WHERE key=?1 ORDER BY rev")
            .expect("query")
            .query_map([key], |r| r.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("revs");
        assert_eq!(logged, [rev - 3, rev - 2, rev]);
        // A watch resuming from the revision that was skipped gets the newest.
        let mut watch = store.watch("/leases/", rev - 1).await.expect("watch");
        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!(
            (event.kv.mod_revision, event.kv.value),
            (rev, b"r3".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_close_commits_held_writes_and_a_kill_moves_revisions_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let key = "/leases/kube-node-lease/n1";
        let store = SqliteStore::open(&path).expect("open");
        let mut rev = store.create(key, b"r0".to_vec()).await.expect("create");
        for n in 1..=2 {
            rev = store
                .update_coalesced(key, format!("r{n}").into_bytes(), rev)
                .await
                .expect("renew");
        }
        store.close();
        let mark = || -> i64 {
            Connection::open(&path)
                .expect("open")
                .query_row("SELECT value FROM meta WHERE name='held'", [], |r| r.get(0))
                .unwrap_or(-1)
        };
        assert_eq!(mark(), 0, "a clean close clears the mark");
        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            store.current_revision().await.expect("rev"),
            rev,
            "nothing lost"
        );
        store.close();
        // As if killed while holding: the mark stayed.
        Connection::open(&path)
            .expect("open")
            .execute("UPDATE meta SET value=1 WHERE name='held'", [])
            .expect("mark");
        let store = SqliteStore::open(&path).expect("reopen");
        let floor = rev + crate::store::snapshot::REVISION_BUMP;
        assert_eq!(store.current_revision().await.expect("rev"), floor);
        // A watcher that saw a lost revision gets what comes after it.
        let mut watch = store.watch("/cm/", rev + 1).await.expect("watch");
        let made = store.create("/cm/a", b"a".to_vec()).await.expect("create");
        assert_eq!(made, floor + 1);
        let event = watch.next().await.expect("event").expect("ok");
        assert_eq!(event.kv.mod_revision, made);
    }
}
