//! etcd store: kelp's keys in an etcd v3 cluster, used as kube-apiserver
//! uses it: a revision is etcd's revision, a write with a precondition is
//! an etcd transaction comparing the key's mod revision, a watch is an etcd
//! watch (with previous values), and compaction is etcd's compaction.
//!
//! Several kelp servers may share one etcd: etcd orders every write, so
//! there is nothing for kelp to coordinate beyond what upstream does.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KvClient, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{
    Error, Event, EventKind, KeyValue, ListPage, Result, Revision, Store, TlsFiles, WatchStream,
};

/// The largest answer kelp takes from etcd (a LIST of every object of a
/// kind in one range); etcd itself sends up to its own limit.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    client: Client,
}

impl EtcdStore {
    /// Connects to the etcd members at `endpoints` (`http://host:2379` or
    /// `https://…`), balancing over them.
    pub async fn connect(endpoints: &[String], tls: &TlsFiles) -> Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10))
            .with_keep_alive_while_idle(true)
            // A member without a leader refuses at once instead of waiting
            // for one: the API answers an error, not a hung request.
            .with_require_leader(true);
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            options = options.with_tls(tls_options(tls)?);
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| Error::Database(format!("connecting to etcd {endpoints:?}: {e}")))?;
        let store = Self { client };
        // Fail at start, not at the first request, if no member answers.
        store.current_revision().await?;
        Ok(store)
    }

    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE)
    }

    /// Sends a request, again (to whichever member the balancer picks) if
    /// it failed without effect: a read after any unavailability, a write
    /// only when it never reached a member (a dead member refused the
    /// connection), as etcd's own client retries.
    async fn send<T, F, Fut>(&self, read: bool, call: F) -> Result<T>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        retrying(|e| unsent(e) || read && unavailable(e), || call(self.kv())).await
    }

    /// Runs a transaction (sent again only if it never reached a member).
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.send(false, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }
}

/// Runs `call`, again (at most [`RETRIES`] times, pausing longer each
/// time) while it fails with an error `retry` says had no effect.
async fn retrying<T, F, Fut>(retry: impl Fn(&etcd_client::Error) -> bool, call: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if attempt < RETRIES && retry(&e) => {
                attempt += 1;
                tracing::debug!(attempt, err = %e, "etcd request failed; sending it again");
                tokio::time::sleep(RETRY_PAUSE * attempt).await;
            }
            outcome => return outcome.map_err(etcd),
        }
    }
}

/// Times a request that failed without effect is sent again.
const RETRIES: u32 = 5;
/// The pause before the first retry (it grows with each).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether the request never reached a member.
fn unsent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        _ => false,
    }
}

/// Whether the member could not serve the request now (no leader, going away).
fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable)
}

fn tls_options(files: &TlsFiles) -> Result<TlsOptions> {
    let pem = files.read()?;
    let mut tls = TlsOptions::new();
    if let Some(ca) = pem.ca {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = pem.identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// etcd's errors as the store's: a compacted or future revision, a full
/// database, or anything else.
fn etcd(e: etcd_client::Error) -> Error {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        Error::Compacted {
            requested: 0,
            compacted: 0,
        }
    } else if text.contains("database space exceeded") {
        Error::SpaceExceeded(text)
    } else {
        Error::Database(format!("etcd: {text}"))
    }
}

/// Whether etcd refused a read at a revision it has not reached yet.
fn is_future_revision(e: &Error) -> bool {
    matches!(e, Error::Database(text) if text.contains("future revision"))
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// The value a failed transaction's `or_else` GET found, if any.
fn found(responses: Vec<TxnOpResponse>) -> Option<KeyValue> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(key_value),
        _ => None,
    })
}

/// A watch event as the store's. A deletion carries the last value (etcd's
/// previous value) at the deletion's revision.
fn event(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let prev = e.prev_kv();
    Some(match e.event_type() {
        EventType::Put => {
            let kind = if kv.create_revision() == kv.mod_revision() {
                EventKind::Created
            } else {
                EventKind::Updated
            };
            Event {
                kind,
                kv: key_value(kv),
                prev: prev
                    .filter(|_| kind == EventKind::Updated)
                    .map(|p| p.value().to_vec()),
            }
        }
        EventType::Delete => Event {
            kind: EventKind::Deleted,
            kv: KeyValue {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: prev.map(|p| p.value().to_vec()).unwrap_or_default(),
                create_revision: prev.map(|p| p.create_revision()).unwrap_or(0),
                mod_revision: kv.mod_revision(),
            },
            prev: None,
        },
    })
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self
            .send(true, |mut kv| async move { kv.get(key, None).await })
            .await?;
        Ok(response.kvs().first().map(key_value))
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let options = GetOptions::new()
            .with_range(super::prefix_end(prefix))
            .with_count_only();
        let response = self
            .send(true, |mut kv| {
                let options = options.clone();
                async move { kv.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(response.count())
    }

    async fn list_at(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage> {
        let start = start_after
            .map(|s| format!("{s}\0"))
            .unwrap_or_else(|| prefix.to_string());
        let options = GetOptions::new()
            .with_range(super::prefix_end(prefix))
            .with_limit(limit as i64);
        let read = |options: GetOptions| {
            let start = start.clone();
            self.send(true, move |mut kv| {
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
        };
        let (response, at) = match revision {
            Some(rev) => match read(options.clone().with_revision(rev)).await {
                Ok(response) => (response, Some(rev)),
                // A revision past the latest reads the latest, as SQLite does.
                Err(e) if is_future_revision(&e) => (read(options).await?, None),
                Err(Error::Compacted { .. }) => {
                    return Err(Error::Compacted {
                        requested: rev,
                        compacted: rev,
                    });
                }
                Err(e) => return Err(e),
            },
            None => (read(options).await?, None),
        };
        Ok(ListPage {
            items: response.kvs().iter().map(key_value).collect(),
            revision: at.unwrap_or_else(|| header_revision(response.header())),
            more: response.more(),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        Ok(header_revision(response.header()))
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
                Compare::value(key, CompareOp::NotEqual, value.clone()),
            ])
            .and_then([TxnOp::put(key, value, None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn).await?;
        if response.succeeded() {
            return Ok(header_revision(response.header()));
        }
        match found(response.op_responses()) {
            None => Err(Error::NotFound(key.to_string())),
            // The bytes stored already: nothing to write, as kube-apiserver
            // skips such an update.
            Some(current) if current.mod_revision == expected => Ok(expected),
            Some(current) => Err(Error::Conflict {
                expected,
                current: Box::new(current),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, KeyValue)> {
        let mut when = vec![Compare::version(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            when.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn).await?;
        let revision = header_revision(response.header());
        if !response.succeeded() {
            return match (found(response.op_responses()), expected) {
                (Some(current), Some(expected)) => Err(Error::Conflict {
                    expected,
                    current: Box::new(current),
                }),
                _ => Err(Error::NotFound(key.to_string())),
            };
        }
        let last = response
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(key_value),
                _ => None,
            })
            .ok_or_else(|| Error::Database("etcd returned no previous value".into()))?;
        Ok((
            revision,
            KeyValue {
                mod_revision: revision,
                ..last
            },
        ))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let response = self
            .send(true, |mut kv| async move {
                kv.get("/", Some(GetOptions::new().with_count_only())).await
            })
            .await?;
        Ok(header_revision(response.header()))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let end = super::prefix_end(prefix);
        // Refused as SQLite refuses it: a read at `after` fails once the
        // history after it may be gone. (A compaction between this read and
        // the watch's start ends the stream with the same error.)
        if after > 0 {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_count_only()
                .with_revision(after);
            let checked = self
                .send(true, |mut kv| {
                    let options = options.clone();
                    async move { kv.get(prefix, Some(options)).await }
                })
                .await;
            match checked {
                Ok(_) => {}
                Err(e) if is_future_revision(&e) => {}
                Err(Error::Compacted { .. }) => {
                    return Err(Error::Compacted {
                        requested: after,
                        compacted: after + 1,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(after + 1)
            .with_prev_key();
        let stream = retrying(unavailable, || {
            let (mut watches, options) = (self.client.watch_client(), options.clone());
            async move { watches.watch(prefix, Some(options)).await }
        })
        .await?;
        let events = futures::stream::unfold(Some(stream), move |state| async move {
            let mut stream = state?;
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            let error = if response.compact_revision() > 0 {
                                Error::Compacted {
                                    requested: after,
                                    compacted: response.compact_revision(),
                                }
                            } else {
                                Error::Database(format!(
                                    "etcd ended the watch: {}",
                                    response.cancel_reason()
                                ))
                            };
                            return Some((vec![Err(error)], None));
                        }
                        let events: Vec<_> =
                            response.events().iter().filter_map(event).map(Ok).collect();
                        if !events.is_empty() {
                            return Some((events, Some(stream)));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((vec![Err(etcd(e))], None)),
                }
            }
        });
        Ok(Box::pin(events.flat_map(futures::stream::iter)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self
            .send(
                false,
                |mut kv| async move { kv.compact(revision, None).await },
            )
            .await
        {
            // Another server (or an earlier pass) compacted further already.
            Ok(_) | Err(Error::Compacted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
