//! LIST with selectors, `limit` and `continue`.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::{Request, decode_stored, store_error};
use crate::api::ApiError;
use crate::api::values::selectors::{FieldSelector, LabelSelector, supported_fields};
use crate::apiserver::ApiState;
use crate::apiserver::body::{TABLE, typed_response, wants_table};
use crate::apiserver::table::TableBuilder;

/// The parsed filters of a list or watch.
pub struct Filters {
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
}

impl Filters {
    /// From the request's query.
    pub fn parse(req: &Request) -> Result<Self, ApiError> {
        Ok(Self {
            labels: LabelSelector::parse(req.query.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(
                req.query.get("fieldSelector").unwrap_or(""),
                supported_fields(&req.rt.group, &req.rt.kind),
            )?,
        })
    }

    /// Whether they select everything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether `obj` passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(obj)
    }
}

/// Lists the objects of the request's resource (in a namespace if given).
/// Objects are decoded and written out one at a time, so memory stays near the
/// size of the response rather than of every decoded object.
pub async fn list(state: &ApiState, req: &Request) -> Result<Response, ApiError> {
    if wants_table(&req.headers) {
        let mut table = TableBuilder::new(&req.rt, &req.query);
        let (revision, next) = scan(state, req, &mut |obj| {
            table.push(&obj);
            Ok(())
        })
        .await?;
        let table = table.finish(&revision.to_string(), next.as_deref());
        return Ok(typed_response(StatusCode::OK, TABLE, &table));
    }
    let metadata_only = crate::apiserver::body::wants_metadata(&req.headers);
    let mut items = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let (revision, next) = scan(state, req, &mut |obj| {
        items.push(if first { b'[' } else { b',' });
        first = false;
        let obj = match metadata_only {
            true => crate::api::registry::object::partial_metadata(&obj),
            false => obj,
        };
        serde_json::to_writer(&mut items, &obj).map_err(ApiError::internal)
    })
    .await?;
    if first {
        items.push(b'[');
    }
    items.push(b']');
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = next {
        metadata["continue"] = json!(token);
    }
    let (kind, api_version, content_type) = match metadata_only {
        true => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
            crate::apiserver::body::PARTIAL_LIST,
        ),
        false => (
            format!("{}List", req.rt.kind),
            req.rt.api_version(),
            "application/json",
        ),
    };
    let head = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
    let mut body = serde_json::to_vec(&head).map_err(ApiError::internal)?;
    body.pop(); // the closing brace; items follow
    body.extend_from_slice(b",\"items\":");
    body.extend_from_slice(&items);
    body.push(b'}');
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Reads matching objects page by page until `limit` is reached; returns them,
/// the list's revision, and a continue token if more remain.
pub async fn collect(
    state: &ApiState,
    req: &Request,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let mut items = Vec::new();
    let (revision, next) = scan(state, req, &mut |obj| {
        items.push(obj);
        Ok(())
    })
    .await?;
    Ok((items, revision, next))
}

/// Store page size for lists: bounds the raw values held at once.
const PAGE: usize = 500;

/// Objects a LIST decodes and encodes between yields to the runtime.
const YIELD_EVERY: usize = 100;

/// Hands each matching object to `emit`, in key order, until `limit`; returns
/// the list's revision and a continue token if more remain.
pub async fn scan(
    state: &ApiState,
    req: &Request,
    emit: &mut (dyn FnMut(Value) -> Result<(), ApiError> + Send),
) -> Result<(i64, Option<String>), ApiError> {
    let filters = Filters::parse(req)?;
    let limit = req
        .query
        .number("limit")?
        .filter(|n| *n > 0)
        .map(|n| n as usize)
        .unwrap_or(0);
    let prefix = req.rt.key_prefix(req.namespace());
    let (mut start, mut revision) = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (key, rv) = decode_continue(token)?;
            (Some(key), Some(rv))
        }
        None => (None, None),
    };
    let mut emitted = 0;
    loop {
        let page = state
            .store
            .list_at(&prefix, start.as_deref(), PAGE, revision)
            .await
            .map_err(|e| store_error(req, e))?;
        let revision = *revision.get_or_insert(page.revision);
        let mut last_key = None;
        for (index, kv) in page.items.iter().enumerate() {
            last_key = Some(kv.key.clone());
            let obj = decode_stored(&req.rt, kv)?;
            if !filters.matches(&obj) {
                continue;
            }
            emit(obj)?;
            emitted += 1;
            if emitted % YIELD_EVERY == 0 {
                // A long LIST must not hold a runtime worker from short requests.
                tokio::task::yield_now().await;
            }
            if limit != 0 && emitted == limit {
                let more = page.more || index + 1 < page.items.len();
                return Ok((revision, more.then(|| encode_continue(&kv.key, revision))));
            }
        }
        if !page.more {
            return Ok((revision, None));
        }
        start = last_key;
    }
}

fn encode_continue(key: &str, revision: i64) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": key});
    base64::engine::general_purpose::URL_SAFE.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(String, i64), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| invalid())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
    let key = value
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let rv = value
        .get("rv")
        .and_then(Value::as_i64)
        .ok_or_else(invalid)?;
    Ok((key.to_string(), rv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue("/registry/core/pods/default/a", 42);
        assert_eq!(
            decode_continue(&token).expect("decode"),
            ("/registry/core/pods/default/a".to_string(), 42)
        );
        assert!(decode_continue("garbage!").is_err());
    }
}
