//! PostgreSQL store: SQLite's three tables (latest values, the event log,
//! metadata) in a database that several kelp servers may share.
//!
//! Revisions: a write transaction first locks the `revision` row of
//! `kelp_meta`, so the writes of every server commit one after another in
//! revision order: a snapshot that holds revision N holds every write up to
//! N, and a LIST, its revision and a watch from it always agree. Writes
//! queued on one server share one transaction (group commit), so the lock
//! costs one round trip per batch, not per write.
//!
//! Watches: a commit NOTIFYs `kelp_events`; each server's follower LISTENs,
//! reads the log past the last revision it handed on and broadcasts it to
//! its watchers (also after its own server's commits, and once a second in
//! case a notification was lost with its connection). A watch reads its
//! backlog from the log, then follows the broadcast ([`super::live`]).
//!
//! Durability is PostgreSQL's: a write is acknowledged once its COMMIT is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};

use super::{
    Error, Event, EventKind, KeyValue, ListPage, Result, Revision, Store, WatchStream, prefix_end,
};

/// The tables, created by the first server to start (under an advisory
/// lock, so two starting at once do not race). Keys sort bytewise
/// (`COLLATE "C"`), as range scans by prefix need.
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7356421);
CREATE TABLE IF NOT EXISTS kelp_kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL, create_rev BIGINT NOT NULL, mod_rev BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS kelp_log (rev BIGINT PRIMARY KEY, key TEXT COLLATE \"C\" NOT NULL, kind SMALLINT NOT NULL, value BYTEA NOT NULL, create_rev BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS kelp_log_key ON kelp_log (key, rev);
CREATE TABLE IF NOT EXISTS kelp_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO kelp_meta VALUES ('revision', 0), ('compacted', 0) ON CONFLICT DO NOTHING;
COMMIT;";

/// The latest value of one key.
const GET: &str = "SELECT value, create_rev, mod_rev FROM kelp_kv WHERE key = $1";

/// Latest values in a key range [$1, $2) past $4 (PostgreSQL's text holds
/// no NUL to start a range just after a key), with the revision they were
/// read at (one statement: one snapshot). An empty range still gives one
/// row of NULLs.
const LIST_LATEST: &str = "SELECT r.value, k.key, k.value, k.create_rev, k.mod_rev FROM kelp_meta r
    LEFT JOIN LATERAL (SELECT key, value, create_rev, mod_rev FROM kelp_kv
                        WHERE key >= $1 AND key < $2 AND key > $4 ORDER BY key LIMIT $3) k ON true
    WHERE r.name = 'revision' ORDER BY k.key";

/// Values in a key range (as in [`LIST_LATEST`], past $5) as they were at
/// revision $4 (at most the latest):
/// unchanged keys from `kelp_kv`, changed or deleted ones from their last
/// log entry at or before it. The first column is the compaction point: no
/// rows are read below it.
const LIST_AT: &str = "WITH q AS (
        SELECT c.value AS compacted, LEAST($4::BIGINT, r.value) AS at
          FROM kelp_meta c, kelp_meta r WHERE c.name = 'compacted' AND r.name = 'revision')
    SELECT q.compacted, q.at, k.key, k.value, k.create_rev, k.mod_rev FROM q
    LEFT JOIN LATERAL (
        SELECT s.key, s.value, s.create_rev, s.mod_rev FROM (
            SELECT key, value, create_rev, mod_rev FROM kelp_kv
             WHERE key >= $1 AND key < $2 AND key > $5 AND mod_rev <= q.at
            UNION ALL
            SELECT l.key, l.value, l.create_rev, l.rev FROM kelp_log l
             WHERE l.key >= $1 AND l.key < $2 AND l.key > $5 AND l.rev <= q.at AND l.kind <> 2
               AND l.rev = (SELECT MAX(x.rev) FROM kelp_log x WHERE x.key = l.key AND x.rev <= q.at)
               AND NOT EXISTS (SELECT 1 FROM kelp_kv y WHERE y.key = l.key AND y.mod_rev <= q.at)
        ) s ORDER BY s.key LIMIT $3
    ) k ON q.at >= q.compacted
    ORDER BY k.key";

/// Log entries after $1 in a key range, each with the value its key had
/// before (if still retained), and the compaction point first: nothing is
/// read when $1 is below it.
const LOG_AFTER: &str = "SELECT c.value, l.rev, l.key, l.kind, l.value, l.create_rev, l.prev FROM kelp_meta c
    LEFT JOIN LATERAL (
        SELECT e.rev, e.key, e.kind, e.value, e.create_rev,
               (SELECT p.value FROM kelp_log p WHERE p.key = e.key AND p.rev < e.rev ORDER BY p.rev DESC LIMIT 1) AS prev
          FROM kelp_log e WHERE e.rev > $1 AND e.key >= $2 AND e.key < $3 ORDER BY e.rev LIMIT $4
    ) l ON $1 >= c.value
    WHERE c.name = 'compacted' ORDER BY l.rev";

/// Takes the revision counter for this transaction: every writer waits here.
const LOCK_REVISION: &str = "SELECT value FROM kelp_meta WHERE name = 'revision' FOR UPDATE";

/// Records a write ($1 its revision, $3 its kind) in the log and the
/// latest values (one statement: one round trip).
const PUT: &str = "WITH logged AS (
        INSERT INTO kelp_log (rev, key, kind, value, create_rev) VALUES ($1, $2, $3, $4, $5))
    INSERT INTO kelp_kv (key, value, create_rev, mod_rev) VALUES ($2, $4, $5, $1)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, create_rev = EXCLUDED.create_rev, mod_rev = EXCLUDED.mod_rev";

/// Records a deletion in the log (with the last value) and removes the key.
const DELETE: &str = "WITH logged AS (
        INSERT INTO kelp_log (rev, key, kind, value, create_rev) VALUES ($1, $2, $3, $4, $5))
    DELETE FROM kelp_kv WHERE key = $2";

/// Ends a batch: the counter moves to $1 and the servers' followers are
/// told (the notification is sent at COMMIT).
const ADVANCE_REVISION: &str = "WITH advanced AS (
        UPDATE kelp_meta SET value = $1 WHERE name = 'revision' RETURNING 1)
    SELECT pg_notify('kelp_events', $2) FROM advanced";

/// Moves the compaction point from $1 to $2 and deletes the tombstones
/// written in ($1, $2] and every entry superseded by one written there; a
/// no-op if another server moved the point meanwhile.
const COMPACT_RANGE: &str = "WITH point AS (
        UPDATE kelp_meta SET value = $2 WHERE name = 'compacted' AND value = $1 RETURNING value)
    DELETE FROM kelp_log WHERE EXISTS (SELECT 1 FROM point) AND rev IN (
        SELECT rev FROM kelp_log WHERE rev > $1 AND rev <= $2 AND kind = 2
        UNION
        SELECT older.rev FROM kelp_log newer JOIN kelp_log older ON older.key = newer.key AND older.rev < newer.rev
         WHERE newer.rev > $1 AND newer.rev <= $2)";

/// How many writes one transaction takes at most.
const MAX_BATCH: usize = 256;
/// Log entries the follower reads at a time.
const FOLLOW_PAGE: i64 = 1000;
/// How often the follower reads the log without a notification.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Revisions one compaction statement covers at most.
const COMPACT_STEP: Revision = 1000;
/// Read connections (each pipelines concurrent queries).
const READERS: usize = 2;

/// The PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    writer: mpsc::Sender<Request>,
    readers: Readers,
    events: Arc<Mutex<broadcast::Sender<Arc<Event>>>>,
    /// The writer and the follower, stopped with the store.
    tasks: Vec<tokio::task::AbortHandle>,
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
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<(Revision, KeyValue)>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`), over TLS
    /// with `tls` (its roots are the database's CA) unless the URL says
    /// `sslmode=disable`, creating the database and the tables if they do
    /// not exist yet. `sslmode=require` without `tls` is refused: kelp
    /// does not send the database's password to a server it cannot verify.
    pub async fn connect(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Self> {
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::Database(format!("datastore endpoint: {e}")))?;
        config
            .connect_timeout(Duration::from_secs(10))
            .keepalives_idle(Duration::from_secs(30))
            .application_name("kelp");
        let tls = match (config.get_ssl_mode(), tls) {
            (SslMode::Disable, _) => None,
            (SslMode::Require, None) => {
                return Err(Error::Database(
                    "sslmode=require: give --datastore-cafile, the CA of the database's certificate"
                        .into(),
                ));
            }
            (_, tls) => tls.map(|config| {
                tokio_postgres_rustls::MakeRustlsConnect::new(Arc::unwrap_or_clone(config))
            }),
        };
        let target = Target { config, tls };
        let client = match target.try_connect(None).await {
            Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                create_database(&target).await?;
                target.connect(None).await?
            }
            other => other.map_err(db)?,
        };
        client.batch_execute(SCHEMA).await.map_err(db)?;
        let seen: Revision = client
            .query_one("SELECT value FROM kelp_meta WHERE name = 'revision'", &[])
            .await
            .map_err(db)?
            .get(0);
        let (events, _) = broadcast::channel(super::live::CAPACITY);
        let events = Arc::new(Mutex::new(events));
        let committed = Arc::new(Notify::new());
        let (writer, requests) = mpsc::channel(4 * MAX_BATCH);
        let readers = Readers::new(target.clone(), Some(client));
        let tasks = vec![
            tokio::spawn(write_loop(target.clone(), requests, committed.clone())).abort_handle(),
            tokio::spawn(follow(
                target,
                readers.clone(),
                events.clone(),
                seen,
                committed,
            ))
            .abort_handle(),
        ];
        Ok(Self {
            writer,
            readers,
            events,
            tasks,
        })
    }

    async fn submit(&self, op: Op) -> Result<(Revision, KeyValue)> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Request { op, reply })
            .await
            .map_err(|_| Error::Database("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| Error::Database("the writer stopped".into()))?
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A database error with its cause (tokio-postgres puts the server's
/// message in the source); a full disk is told as such.
fn db(e: tokio_postgres::Error) -> Error {
    let text = match e.as_db_error() {
        Some(server) => server.to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    };
    if e.code() == Some(&SqlState::DISK_FULL) {
        Error::SpaceExceeded(text)
    } else {
        Error::Database(text)
    }
}

/// Where connections go and how: the endpoint's settings, and TLS
/// (rustls, verifying the server against `--datastore-cafile`) if asked for.
#[derive(Clone)]
struct Target {
    config: Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    /// A new connection; the notifications it receives go to `notified`.
    async fn connect(&self, notified: Option<mpsc::UnboundedSender<()>>) -> Result<Client> {
        self.try_connect(notified).await.map_err(db)
    }

    /// [`Target::connect`] with the driver's error (its SQLSTATE) as it is.
    async fn try_connect(
        &self,
        notified: Option<mpsc::UnboundedSender<()>>,
    ) -> std::result::Result<Client, tokio_postgres::Error> {
        Ok(match &self.tls {
            None => drive(self.config.connect(NoTls).await?, notified),
            Some(tls) => drive(self.config.connect(tls.clone()).await?, notified),
        })
    }
}

/// Runs a connection's I/O in a task of its own, handing on notifications.
fn drive<S, T>(
    (client, mut connection): (Client, tokio_postgres::Connection<S, T>),
    notified: Option<mpsc::UnboundedSender<()>>,
) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(message) = futures::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(notified) = &notified
                        && notified.send(()).is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "postgres connection ended");
                    return;
                }
            }
        }
    });
    client
}

/// A connection with the statements it has prepared (each is parsed once
/// per connection, then only bound and run).
struct Conn {
    client: Client,
    prepared: tokio::sync::Mutex<HashMap<&'static str, Statement>>,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Default::default(),
        }
    }

    async fn open(target: &Target) -> Result<Self> {
        Ok(Self::new(target.connect(None).await?))
    }

    async fn query(
        &self,
        sql: &'static str,
        params: Params<'_>,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let statement = {
            let mut prepared = self.prepared.lock().await;
            match prepared.get(sql) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = self.client.prepare(sql).await?;
                    prepared.insert(sql, statement.clone());
                    statement
                }
            }
        };
        self.client.query(&statement, params).await
    }
}

/// Creates the configured database, connected to the `postgres` one (as
/// k3s's kine does, so an empty server is enough).
async fn create_database(target: &Target) -> Result<()> {
    let name = target
        .config
        .get_dbname()
        .ok_or_else(|| Error::Database("the endpoint names no database".into()))?
        .to_string();
    let mut admin = target.clone();
    admin.config.dbname("postgres");
    let client = admin.connect(None).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client
        .batch_execute(&format!("CREATE DATABASE {quoted}"))
        .await
    {
        Err(e) if e.code() != Some(&SqlState::DUPLICATE_DATABASE) => Err(db(e)),
        _ => Ok(()),
    }
}

/// Read connections, reconnected when one is found closed.
#[derive(Clone)]
struct Readers {
    target: Target,
    slots: Arc<Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>>,
    next: Arc<AtomicUsize>,
}

impl Readers {
    fn new(target: Target, first: Option<Client>) -> Self {
        let mut slots: Vec<_> = (0..READERS)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        *slots[0].get_mut() = first.map(|c| Arc::new(Conn::new(c)));
        Self {
            target,
            slots: Arc::new(slots),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn conn(&self) -> Result<Arc<Conn>> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut held = slot.lock().await;
        if let Some(conn) = held.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(Conn::open(&self.target).await?);
        *held = Some(conn.clone());
        Ok(conn)
    }

    async fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        self.conn().await?.query(sql, params).await.map_err(db)
    }
}

/// Commits queued writes, a batch per transaction.
async fn write_loop(target: Target, mut requests: mpsc::Receiver<Request>, committed: Arc<Notify>) {
    let mut conn: Option<Conn> = None;
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            conn = match Conn::open(&target).await {
                Ok(c) => Some(c),
                Err(e) => {
                    fail(batch, &e.to_string());
                    continue;
                }
            };
        }
        let Some(open) = conn.as_ref() else {
            continue;
        };
        match apply_batch(open, &batch).await {
            Ok(outcomes) => {
                committed.notify_one();
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            // Whether a COMMIT whose answer was lost took effect is unknown,
            // as with any database: the caller is told it failed.
            Err(e) => fail(batch, &db(e).to_string()),
        }
    }
}

fn fail(batch: Vec<Request>, why: &str) {
    for request in batch {
        let _ = request.reply.send(Err(Error::Database(why.to_string())));
    }
}

/// One transaction for the batch: outer error = the database failed (the
/// whole batch fails), inner = each write's own outcome.
async fn apply_batch(
    conn: &Conn,
    batch: &[Request],
) -> std::result::Result<Vec<Result<(Revision, KeyValue)>>, tokio_postgres::Error> {
    conn.client.batch_execute("BEGIN").await?;
    let result = async {
        let mut rev: Revision = conn.query(LOCK_REVISION, &[]).await?[0].get(0);
        let first = rev;
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            outcomes.push(apply_op(conn, &request.op, &mut rev).await?);
        }
        if rev > first {
            conn.query(ADVANCE_REVISION, &[&rev, &rev.to_string()])
                .await?;
        }
        conn.client.batch_execute("COMMIT").await?;
        Ok(outcomes)
    }
    .await;
    if result.is_err() && !conn.client.is_closed() {
        let _ = conn.client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn apply_op(
    conn: &Conn,
    op: &Op,
    rev: &mut Revision,
) -> std::result::Result<Result<(Revision, KeyValue)>, tokio_postgres::Error> {
    let current = |key: String| async move {
        let rows = conn.query(GET, &[&key]).await?;
        Ok::<_, tokio_postgres::Error>(rows.first().map(|row| got(key, row)))
    };
    let (kv, kind) = match op {
        Op::Create { key, value } => {
            match super::created(current(key.clone()).await?, key, value.clone(), *rev + 1) {
                Ok(kv) => (kv, EventKind::Created),
                Err(e) => return Ok(Err(e)),
            }
        }
        Op::Update {
            key,
            value,
            expected,
        } => match super::updated(
            current(key.clone()).await?,
            key,
            value.clone(),
            *expected,
            *rev + 1,
        ) {
            Ok((kv, _)) => (kv, EventKind::Updated),
            Err(e) => return Ok(Err(e)),
        },
        Op::Delete { key, expected } => {
            match super::deleted(current(key.clone()).await?, key, *expected, *rev + 1) {
                Ok(kv) => (kv, EventKind::Deleted),
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    *rev += 1;
    let sql = if kind == EventKind::Deleted {
        DELETE
    } else {
        PUT
    };
    conn.query(
        sql,
        &[
            &kv.mod_revision,
            &kv.key,
            &kind.code(),
            &kv.value,
            &kv.create_revision,
        ],
    )
    .await?;
    Ok(Ok((*rev, kv)))
}

/// A row of [`GET`] as the value of `key`.
fn got(key: String, row: &Row) -> KeyValue {
    KeyValue {
        key,
        value: row.get(0),
        create_revision: row.get(1),
        mod_revision: row.get(2),
    }
}

/// A log row of [`LOG_AFTER`] (columns 1..) as an event.
fn log_event(row: &Row) -> Event {
    let kind = EventKind::from_code(row.get::<_, i16>(3).into());
    Event {
        kind,
        kv: KeyValue {
            key: row.get(2),
            value: row.get(4),
            create_revision: row.get(5),
            mod_revision: row.get(1),
        },
        prev: if kind == EventKind::Updated {
            row.get(6)
        } else {
            None
        },
    }
}

/// Log entries after `after` under `[start, end)`, at most `limit`; `Compacted`
/// if entries after `after` may have been forgotten.
async fn log_after(
    readers: &Readers,
    after: Revision,
    start: &str,
    end: &str,
    limit: Option<i64>,
) -> Result<Vec<Event>> {
    let rows = readers
        .query(LOG_AFTER, &[&after, &start, &end, &limit])
        .await?;
    let compacted: Revision = rows.first().map(|r| r.get(0)).unwrap_or(0);
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, Option<Revision>>(1).is_some())
        .map(log_event)
        .collect())
}

/// Reads the shared log past `seen` whenever some server commits, and
/// broadcasts it to this server's watchers.
async fn follow(
    target: Target,
    readers: Readers,
    events: Arc<Mutex<broadcast::Sender<Arc<Event>>>>,
    mut seen: Revision,
    committed: Arc<Notify>,
) {
    let (notified, mut notifications) = mpsc::unbounded_channel();
    let mut listener: Option<Client> = None;
    loop {
        if listener.as_ref().is_none_or(|c| c.is_closed()) {
            listener = listen(&target, notified.clone()).await.ok();
        }
        tokio::select! {
            _ = notifications.recv() => {}
            _ = committed.notified() => {}
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        while notifications.try_recv().is_ok() {}
        loop {
            match log_after(&readers, seen, "", "\u{7f}", Some(FOLLOW_PAGE)).await {
                Ok(page) => {
                    let full = page.len() as i64 == FOLLOW_PAGE;
                    let sender = events.lock().expect("watch broadcast").clone();
                    for event in page {
                        seen = event.kv.mod_revision;
                        let _ = sender.send(Arc::new(event));
                    }
                    if !full {
                        break;
                    }
                }
                Err(Error::Compacted { compacted, .. }) => {
                    // Entries this server never handed on are gone: its
                    // watchers end, and watch again from where they were
                    // (or are told to relist).
                    tracing::warn!(seen, compacted, "watch follower fell behind compaction");
                    *events.lock().expect("watch broadcast") =
                        broadcast::channel(super::live::CAPACITY).0;
                    seen = compacted;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the postgres event log");
                    break;
                }
            }
        }
    }
}

/// A connection that LISTENs for commits and tells `notified` of each.
async fn listen(target: &Target, notified: mpsc::UnboundedSender<()>) -> Result<Client> {
    let client = target.connect(Some(notified)).await?;
    client
        .batch_execute("LISTEN kelp_events")
        .await
        .map_err(db)?;
    Ok(client)
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let rows = self.readers.query(GET, &[&key]).await?;
        Ok(rows.first().map(|row| got(key.to_string(), row)))
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let end = prefix_end(prefix);
        let rows = self
            .readers
            .query(
                "SELECT COUNT(*) FROM kelp_kv WHERE key >= $1 AND key < $2",
                &[&prefix, &end],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at: Option<Revision>,
    ) -> Result<ListPage> {
        let after = start_after.unwrap_or_default();
        let end = prefix_end(prefix);
        let fetch = (limit != 0).then_some(limit as i64 + 1);
        // Columns: LIST_LATEST has the revision then the row; LIST_AT the
        // compaction point, the revision, then the row.
        let (rows, first) = match at {
            None => (
                self.readers
                    .query(LIST_LATEST, &[&prefix, &end, &fetch, &after])
                    .await?,
                1,
            ),
            Some(revision) => {
                let rows = self
                    .readers
                    .query(LIST_AT, &[&prefix, &end, &fetch, &revision, &after])
                    .await?;
                if let Some(row) = rows.first() {
                    let (compacted, at): (Revision, Revision) = (row.get(0), row.get(1));
                    if at < compacted {
                        return Err(Error::Compacted {
                            requested: revision,
                            compacted,
                        });
                    }
                }
                (rows, 2)
            }
        };
        let revision: Revision = rows.first().map(|r| r.get(first - 1)).unwrap_or(0);
        let mut items: Vec<KeyValue> = rows
            .iter()
            .filter(|r| r.get::<_, Option<&str>>(first).is_some())
            .map(|r| KeyValue {
                key: r.get(first),
                value: r.get(first + 1),
                create_revision: r.get(first + 2),
                mod_revision: r.get(first + 3),
            })
            .collect();
        let more = limit != 0 && items.len() > limit;
        items.truncate(if limit == 0 { items.len() } else { limit });
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let op = Op::Create {
            key: key.to_string(),
            value,
        };
        Ok(self.submit(op).await?.0)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected,
        };
        Ok(self.submit(op).await?.0)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let op = Op::Delete {
            key: key.to_string(),
            expected,
        };
        self.submit(op).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        let rows = self
            .readers
            .query("SELECT value FROM kelp_meta WHERE name = 'revision'", &[])
            .await?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading the backlog so nothing falls between them.
        let live = self.events.lock().expect("watch broadcast").subscribe();
        let backlog = log_after(&self.readers, after, prefix, &prefix_end(prefix), None).await?;
        Ok(super::live::stream(backlog, after, prefix, live))
    }

    /// In steps of [`COMPACT_STEP`] revisions, each one statement, so
    /// writes go on between them.
    async fn compact(&self, revision: Revision) -> Result<()> {
        let meta = "SELECT c.value, r.value FROM kelp_meta c, kelp_meta r WHERE c.name = 'compacted' AND r.name = 'revision'";
        let rows = self.readers.query(meta, &[]).await?;
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let (mut point, latest): (Revision, Revision) = (row.get(0), row.get(1));
        let target = revision.min(latest);
        while point < target {
            let next = (point + COMPACT_STEP).min(target);
            self.readers.query(COMPACT_RANGE, &[&point, &next]).await?;
            point = self
                .readers
                .query("SELECT value FROM kelp_meta WHERE name = 'compacted'", &[])
                .await?
                .first()
                .map(|r| r.get(0))
                .unwrap_or(next);
        }
        Ok(())
    }
}
