//! The store: a key-value space with one global revision counter, optimistic
//! concurrency, and watches that replay from any retained revision.
//!
//! Every API object lives under one key; the revision of its last write is its
//! `resourceVersion`. Implementations: [`sqlite::SqliteStore`] (the default),
//! [`postgres::PostgresStore`] and [`etcd::EtcdStore`]; [`open`] picks one
//! from `--datastore-endpoint`.

pub mod compaction;
pub mod disk_writes;
pub mod encrypted;
pub mod encryption;
pub mod etcd;
mod held;
mod live;
pub mod observed;
pub mod postgres;
pub mod snapshot;
pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A store revision. Strictly increasing; every write gets a new one.
pub type Revision = i64;

/// One stored value with its revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/apps/deployments/default/web`.
    pub key: String,
    /// The stored bytes (a JSON object without `metadata.resourceVersion`).
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
}

/// What happened to a key at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key did not exist before.
    Created,
    /// The key existed and was overwritten.
    Updated,
    /// The key was removed; the event carries its last value.
    Deleted,
}

impl EventKind {
    /// The kind's code in the SQL stores' event logs.
    pub(crate) fn code(self) -> i16 {
        match self {
            EventKind::Created => 0,
            EventKind::Updated => 1,
            EventKind::Deleted => 2,
        }
    }

    /// The kind a log code stands for.
    pub(crate) fn from_code(code: i64) -> Self {
        match code {
            0 => EventKind::Created,
            1 => EventKind::Updated,
            _ => EventKind::Deleted,
        }
    }
}

/// One committed write, as delivered to watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key's value after the write (for `Deleted`: its last value, with
    /// `mod_revision` set to the deletion's revision).
    pub kv: KeyValue,
    /// The value before the write (for `Updated`), if still retained; lets
    /// filtered watches see objects enter and leave their selection.
    pub prev: Option<Vec<u8>>,
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Values in key order.
    pub items: Vec<KeyValue>,
    /// The store's revision when the page was read.
    pub revision: Revision,
    /// Whether keys remain after the last item.
    pub more: bool,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Create of a key that exists.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// Update or delete of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// The key's revision is not the one the caller expected; carries the current value.
    #[error("key {key} was modified (expected revision {expected}, found {found})", key = .current.key, found = .current.mod_revision)]
    Conflict {
        /// The revision the caller expected.
        expected: Revision,
        /// The current value.
        current: Box<KeyValue>,
    },
    /// A watch asked for a revision older than the oldest one retained.
    #[error("required revision {requested} has been compacted (oldest retained is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction point.
        compacted: Revision,
    },
    /// A watcher fell too far behind the commit stream.
    #[error("watcher fell behind the commit stream")]
    Lagged,
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// The datastore's disk has no room for the write (etcd's "database
    /// space exceeded"); reads still work, and writes once space is freed.
    #[error("the datastore's disk is full ({0}): free space on it and retry")]
    SpaceExceeded(String),
    /// The database file is damaged (or is no database).
    #[error(
        "the datastore is damaged ({0}); stop kelp and restore a snapshot: `kelp store snapshot list`, then `kelp store snapshot restore NAME`"
    )]
    Corrupt(String),
    /// Another process holds the database.
    #[error("the datastore {0} is in use by another kelp (stop it first)")]
    Locked(String),
}

/// Result alias of the store.
pub type Result<T> = std::result::Result<T, Error>;

/// A stream of committed events in revision order.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// The storage backend: keys, revisions, watches. Object semantics live above it.
#[async_trait]
pub trait Store: Send + Sync {
    /// The latest value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys under `prefix` in order, starting after `start_after`, at most `limit` (0 = all).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        self.list_at(prefix, start_after, limit, None).await
    }
    /// Like `list`, but as the range was at `revision` (None = latest); `Compacted`
    /// if that revision is no longer retained. Pages of one LIST read at one revision.
    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage>;
    /// Creates `key`; fails with `AlreadyExists` if it exists. Returns the new revision once durable.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;
    /// Replaces `key` if its mod revision is `expected`. Returns the new revision once durable.
    /// An update to the bytes already stored may write nothing and return `expected` (etcd's
    /// does, as kube-apiserver's storage skips such writes).
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision>;
    /// Like `update`, for a write a crash may lose without harm (a Lease
    /// renewal): the store may hold it in memory, seen by every read and
    /// watch at once, and make it durable with a later commit. A store that
    /// cannot hold writes commits it as `update` does.
    async fn update_coalesced(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision> {
        self.update(key, value, expected).await
    }
    /// Removes `key`, if `expected` is given only at that revision. Returns the deletion's
    /// revision and the last value.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)>;
    /// The latest committed revision.
    async fn current_revision(&self) -> Result<Revision>;
    /// Events for keys under `prefix` with revision greater than `after`, then live events.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;
    /// Forgets history up to and including `revision`; watches from before it get `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// How many keys are under `prefix` now.
    async fn count(&self, prefix: &str) -> Result<i64> {
        Ok(self.list(prefix, None, 0).await?.items.len() as i64)
    }
}

/// Where the state lives (`--datastore-endpoint`, as k3s spells it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(std::path::PathBuf),
    /// `postgres://user:pass@host:5432/db` (also `postgresql://`).
    Postgres(String),
    /// `http(s)://host:2379[,http(s)://host:2379…]`: etcd members.
    Etcd(Vec<String>),
}

/// TLS files for a datastore that asks for them (`--datastore-cafile`,
/// `--datastore-certfile`, `--datastore-keyfile`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA that signed the datastore's serving certificate.
    pub ca: Option<std::path::PathBuf>,
    /// kelp's client certificate.
    pub cert: Option<std::path::PathBuf>,
    /// Its key.
    pub key: Option<std::path::PathBuf>,
}

/// What [`TlsFiles`] hold (PEM).
pub struct TlsPem {
    /// The CA.
    pub ca: Option<String>,
    /// The client certificate and its key.
    pub identity: Option<(String, String)>,
}

impl TlsFiles {
    /// Reads the files given; a certificate without its key (or the
    /// reverse) is refused.
    pub fn read(&self) -> Result<TlsPem> {
        let read = |path: &std::path::PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Database(format!("{}: {e}", path.display())))
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            _ => {
                return Err(Error::Database(
                    "--datastore-certfile and --datastore-keyfile go together".into(),
                ));
            }
        };
        Ok(TlsPem {
            ca: self.ca.as_ref().map(read).transpose()?,
            identity,
        })
    }
}

impl Endpoint {
    /// Parses an endpoint; `None` is the SQLite database at `default`.
    pub fn parse(
        text: Option<&str>,
        default: &std::path::Path,
    ) -> std::result::Result<Self, String> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self::Sqlite(default.to_path_buf()));
        };
        if let Some(path) = text.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            return Ok(Self::Sqlite(if path.is_empty() {
                default.to_path_buf()
            } else {
                path.into()
            }));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_string()));
        }
        let members: Vec<String> = text.split(',').map(|m| m.trim().to_string()).collect();
        if members
            .iter()
            .all(|m| m.starts_with("http://") || m.starts_with("https://"))
        {
            return Ok(Self::Etcd(members));
        }
        Err(format!(
            "{text:?}: expected sqlite://PATH, postgres://USER:PASS@HOST:PORT/DB or http(s)://HOST:2379[,...] (etcd)"
        ))
    }

    /// The backend's name, as metrics and logs give it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Etcd(_) => "etcd",
        }
    }
}

/// A create of `key` with `value`, allowed when it has no current value
/// `old`: the new value at `rev` (not written yet). (For the stores that
/// check preconditions themselves.)
pub(crate) fn created(
    old: Option<KeyValue>,
    key: &str,
    value: Vec<u8>,
    rev: Revision,
) -> Result<KeyValue> {
    if old.is_some() {
        return Err(Error::AlreadyExists(key.to_string()));
    }
    Ok(KeyValue {
        key: key.to_string(),
        value,
        create_revision: rev,
        mod_revision: rev,
    })
}

/// An update of `key` to `value` over its current value `old`, allowed when
/// `expected` is that value's revision: the new value at `rev` (not written
/// yet), and the old one. (For the stores that check preconditions
/// themselves; etcd checks them in its transactions.)
pub(crate) fn updated(
    old: Option<KeyValue>,
    key: &str,
    value: Vec<u8>,
    expected: Revision,
    rev: Revision,
) -> Result<(KeyValue, KeyValue)> {
    let Some(old) = old else {
        return Err(Error::NotFound(key.to_string()));
    };
    if old.mod_revision != expected {
        return Err(Error::Conflict {
            expected,
            current: Box::new(old),
        });
    }
    let kv = KeyValue {
        key: key.to_string(),
        value,
        create_revision: old.create_revision,
        mod_revision: rev,
    };
    Ok((kv, old))
}

/// A delete of `key` over its current value `old`, allowed when `expected`
/// (if given) is that value's revision: the last value, as the deletion at
/// `rev` records it.
pub(crate) fn deleted(
    old: Option<KeyValue>,
    key: &str,
    expected: Option<Revision>,
    rev: Revision,
) -> Result<KeyValue> {
    let Some(old) = old else {
        return Err(Error::NotFound(key.to_string()));
    };
    if let Some(expected) = expected
        && old.mod_revision != expected
    {
        return Err(Error::Conflict {
            expected,
            current: Box::new(old),
        });
    }
    Ok(KeyValue {
        mod_revision: rev,
        ..old
    })
}

/// The first key that is not under `prefix` (for range scans).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_their_backend() {
        let default = std::path::Path::new("/d/state.db");
        assert_eq!(
            Endpoint::parse(None, default),
            Ok(Endpoint::Sqlite(default.into()))
        );
        assert_eq!(
            Endpoint::parse(Some("sqlite:///x/y.db?_journal=WAL"), default),
            Ok(Endpoint::Sqlite("/x/y.db".into()))
        );
        assert_eq!(
            Endpoint::parse(Some("postgres://u:p@db:5432/k"), default),
            Ok(Endpoint::Postgres("postgres://u:p@db:5432/k".into()))
        );
        assert_eq!(
            Endpoint::parse(Some("https://a:2379, https://b:2379"), default),
            Ok(Endpoint::Etcd(vec![
                "https://a:2379".into(),
                "https://b:2379".into()
            ]))
        );
        assert!(Endpoint::parse(Some("mysql://u@h/db"), default).is_err());
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a"), "b");
    }
}
