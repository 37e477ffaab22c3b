//! WATCH: a chunked stream of `{"type","object"}` lines, as upstream:
//! initial ADDED events for resourceVersion ""/"0", BOOKMARKs when asked for,
//! a 410 ERROR event when the revision is gone, close at `timeoutSeconds`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

use super::list::{Filters, collect};
use super::{Request, decode_stored, store_error};
use crate::api::ApiError;
use crate::apiserver::ApiState;
use crate::apiserver::body::{TABLE, wants_table};
use crate::store::{self, EventKind};

/// Upstream's default watch timeout is 30–60 min; kubectl always sends one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark is sent when the client allows them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// How many recent events stay decoded, and for how long: watches take an
/// event within moments of each other, but under load the slowest lag by
/// a second or two, and one that lags further decodes it again. (128 kept
/// events, about 0.3 s of a 3,000-pod ramp, had each pod event decoded
/// several times over: a sixth of the server's CPU.) The time bound gives
/// the memory back once writes calm down.
const DECODED_KEPT: usize = 1024;
const DECODED_FOR: Duration = Duration::from_secs(5);

/// Watch events decoded once for every watch that receives them: each
/// change of a pod reaches every kubelet's watch and each controller's,
/// and decoding the stored bytes (and the previous value, for selectors)
/// and encoding the line per watch was the API server's largest cost with
/// 100 nodes (`benches/hollow_nodes.rs`).
#[derive(Default)]
pub struct DecodedEvents {
    recent: Mutex<Recent>,
}

/// (revision, key, group/version served).
type EventKey = (store::Revision, String, String);

#[derive(Default)]
struct Recent {
    by_event: HashMap<EventKey, Arc<Decoded>>,
    /// Oldest first, with when each was decoded.
    order: VecDeque<(EventKey, std::time::Instant)>,
}

/// One event as watches of one version see it.
struct Decoded {
    /// The object, or None when the stored bytes do not decode.
    object: Option<Value>,
    /// The previous value, decoded when a filtered watch first needs it.
    previous: OnceLock<Option<Value>>,
    /// The object as JSON, encoded when a plain JSON watch first needs it.
    json: OnceLock<Vec<u8>>,
}

impl DecodedEvents {
    fn get(
        &self,
        rt: &crate::api::registry::resources::ResourceType,
        event: &store::Event,
    ) -> Arc<Decoded> {
        let key = (
            event.kv.mod_revision,
            event.kv.key.clone(),
            format!("{}/{}", rt.group, rt.version),
        );
        if let Some(hit) = self.recent.lock().expect("decoded").by_event.get(&key) {
            return hit.clone();
        }
        // Decoded outside the lock: two watches racing both decode, rarely.
        let decoded = Arc::new(Decoded {
            object: decode_stored(rt, &event.kv).ok(),
            previous: OnceLock::new(),
            json: OnceLock::new(),
        });
        let now = std::time::Instant::now();
        let mut recent = self.recent.lock().expect("decoded");
        if recent
            .by_event
            .insert(key.clone(), decoded.clone())
            .is_none()
        {
            recent.order.push_back((key, now));
        }
        while let Some((_, at)) = recent.order.front()
            && (recent.order.len() > DECODED_KEPT || now.duration_since(*at) > DECODED_FOR)
        {
            if let Some((old, _)) = recent.order.pop_front() {
                recent.by_event.remove(&old);
            }
        }
        decoded
    }
}

impl Decoded {
    fn previous(&self, event: &store::Event) -> Option<&Value> {
        self.previous
            .get_or_init(|| {
                event
                    .prev
                    .as_deref()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            })
            .as_ref()
    }

    fn json(&self, object: &Value) -> &[u8] {
        self.json
            .get_or_init(|| serde_json::to_vec(object).unwrap_or_default())
    }
}

/// A watch line from an object already encoded.
fn framed(event_type: &str, object_json: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(object_json.len() + 32);
    bytes.extend_from_slice(br#"{"type":""#);
    bytes.extend_from_slice(event_type.as_bytes());
    bytes.extend_from_slice(br#"","object":"#);
    bytes.extend_from_slice(object_json);
    bytes.extend_from_slice(b"}\n");
    bytes
}

/// Starts a watch; the response body streams until timeout or disconnect.
pub async fn watch(state: Arc<ApiState>, req: Request) -> Result<Response, ApiError> {
    let filters = Filters::parse(&req)?;
    let metadata_only = crate::apiserver::body::wants_metadata(&req.headers);
    let table = !metadata_only && wants_table(&req.headers);
    let bookmarks = req.query.flag("allowWatchBookmarks");
    let send_initial = req.query.get("sendInitialEvents").map(|v| v == "true");
    let timeout = req
        .query
        .number("timeoutSeconds")?
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(DEFAULT_TIMEOUT);
    let rv = req.query.get("resourceVersion").unwrap_or("");
    let (initial, from) = if matches!(rv, "" | "0") || send_initial == Some(true) {
        let mut initial_req = req.for_object(None, "");
        initial_req.path.name = None;
        initial_req.query = crate::apiserver::request::Query::parse(Some(&without_paging(&req)));
        let (items, revision, _) = collect(&state, &initial_req).await?;
        (items, revision)
    } else {
        let from = rv
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        (Vec::new(), from)
    };
    let prefix = req.rt.key_prefix(req.namespace());
    let events = match state.store.watch(&prefix, from).await {
        Ok(events) => Some(events),
        Err(store::Error::Compacted { .. }) => None,
        Err(e) => return Err(store_error(&req, e)),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    let rt = req.rt.clone();
    let line = move |event_type: &str, obj: &Value| -> Vec<u8> {
        let object = if table && event_type != "ERROR" && event_type != "BOOKMARK" {
            crate::apiserver::table::single(&req.rt, obj, "", &req.query)
        } else if metadata_only && event_type != "ERROR" {
            crate::api::registry::object::partial_metadata(obj)
        } else {
            obj.clone()
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    };
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for obj in &initial {
            if tx.send(Ok(line("ADDED", obj))).await.is_err() {
                return;
            }
        }
        if send_initial == Some(true) && bookmarks {
            let mark = bookmark(&rt, from, true);
            if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                return;
            }
        }
        let Some(mut events) = events else {
            let gone = ApiError::Expired {
                requested: from,
                current: from,
            }
            .status();
            let _ = tx.send(Ok(line("ERROR", &gone))).await;
            return;
        };
        let mut last = from;
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(Ok(line("BOOKMARK", &bookmark(&rt, last, false)))).await.is_err() {
                        return;
                    }
                }
                next = events.next() => {
                    let Some(next) = next else { return };
                    let event = match next {
                        Ok(event) => event,
                        Err(_) => {
                            let gone = ApiError::Expired { requested: last, current: last }.status();
                            let _ = tx.send(Ok(line("ERROR", &gone))).await;
                            return;
                        }
                    };
                    last = event.kv.mod_revision;
                    let decoded = state.watch_events.get(&rt, &event);
                    let Some(obj) = decoded.object.as_ref() else { continue };
                    let now_matches = filters.matches(obj);
                    // Only a selection can be entered or left.
                    let before_matched = if filters.is_empty() {
                        None
                    } else {
                        decoded.previous(&event).map(|p| filters.matches(p))
                    };
                    let kind = match (event.kind, before_matched, now_matches) {
                        (EventKind::Created, _, true) => "ADDED",
                        (EventKind::Deleted, _, true) => "DELETED",
                        (EventKind::Updated, Some(false), true) => "ADDED",
                        (EventKind::Updated, Some(true), false) => "DELETED",
                        (EventKind::Updated, _, true) => "MODIFIED",
                        _ => continue,
                    };
                    let bytes = if table || metadata_only {
                        line(kind, obj)
                    } else {
                        framed(kind, decoded.json(obj))
                    };
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let content_type = match (table, metadata_only) {
        (true, _) => TABLE,
        (_, true) => crate::apiserver::body::PARTIAL,
        _ => "application/json",
    };
    let body = Body::from_stream(tokio_stream(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .map_err(ApiError::internal)
}

fn tokio_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn bookmark(
    rt: &crate::api::registry::resources::ResourceType,
    revision: i64,
    initial_end: bool,
) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

/// The query without paging, for the initial list of a watch.
fn without_paging(req: &Request) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["labelSelector", "fieldSelector"] {
        if let Some(v) = req.query.get(key) {
            out.append_pair(key, v);
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::resources::Registry;

    fn event(revision: i64, value: &str, prev: Option<&str>) -> store::Event {
        store::Event {
            kind: EventKind::Updated,
            kv: store::KeyValue {
                key: "/registry/configmaps/default/a".into(),
                value: value.as_bytes().to_vec(),
                create_revision: 1,
                mod_revision: revision,
            },
            prev: prev.map(|p| p.as_bytes().to_vec()),
        }
    }

    #[test]
    fn an_event_is_decoded_once_for_every_watch_and_framed_as_a_line() {
        let rt = Registry::new()
            .lookup("", "v1", "configmaps")
            .expect("configmaps");
        let events = DecodedEvents::default();
        let first = event(
            7,
            r#"{"metadata":{"name":"a"},"data":{"k":"v"}}"#,
            Some("{}"),
        );
        let a = events.get(&rt, &first);
        let b = events.get(&rt, &first);
        assert!(Arc::ptr_eq(&a, &b), "the second watch reuses the decoding");
        let object = a.object.as_ref().expect("decoded");
        assert_eq!(object["metadata"]["resourceVersion"], "7");
        assert_eq!(a.previous(&first), Some(&json!({})));
        let line = framed("MODIFIED", a.json(object));
        assert_eq!(line.last(), Some(&b'\n'));
        let parsed: Value = serde_json::from_slice(&line).expect("a JSON line");
        assert_eq!(parsed["type"], "MODIFIED");
        assert_eq!(parsed["object"]["data"]["k"], "v");
        // Only the recent events are kept.
        for revision in 8..8 + DECODED_KEPT as i64 {
            events.get(&rt, &event(revision, "{}", None));
        }
        assert!(!Arc::ptr_eq(&a, &events.get(&rt, &first)));
        let corrupt = events.get(&rt, &event(9 + DECODED_KEPT as i64, "not json", None));
        assert!(corrupt.object.is_none());
    }
}
