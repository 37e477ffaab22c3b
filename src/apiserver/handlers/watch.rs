//! WATCH: a chunked stream of `{"type","object"}` lines, as upstream:
//! initial ADDED events for resourceVersion ""/"0", BOOKMARKs when asked for,
//! a 410 ERROR event when the revision is gone, close at `timeoutSeconds`.

use std::sync::Arc;
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
            crate::api::object::partial_metadata(obj)
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
                    let Ok(obj) = decode_stored(&rt, &event.kv) else { continue };
                    let now_matches = filters.matches(&obj);
                    let before_matched = event.prev.as_deref().and_then(|p| serde_json::from_slice::<Value>(p).ok()).map(|p| filters.matches(&p));
                    let kind = match (event.kind, before_matched, now_matches) {
                        (EventKind::Created, _, true) => "ADDED",
                        (EventKind::Deleted, _, true) => "DELETED",
                        (EventKind::Updated, Some(false), true) => "ADDED",
                        (EventKind::Updated, Some(true), false) => "DELETED",
                        (EventKind::Updated, _, true) => "MODIFIED",
                        _ => continue,
                    };
                    if tx.send(Ok(line(kind, &obj))).await.is_err() {
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

fn bookmark(rt: &crate::api::resources::ResourceType, revision: i64, initial_end: bool) -> Value {
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
