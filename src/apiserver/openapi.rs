//! OpenAPI v3 documents: a root listing each group-version, and per
//! group-version documents with one path per resource whose PATCH carries
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter (what
//! kubectl's validation looks for), plus the schemas (`kubectl explain`);
//! and the v2 document (`api::registry::openapi_v2`), whose definitions kubectl
//! validates `kind: List` documents against.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::body::json_response;
use crate::api::ApiError;
use crate::api::registry::resources::ResourceType;

/// How the protobuf form is answered (as upstream: the requested
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` is no
/// valid media type to Go's parser, which client-go runs on every reply).
const V2_PROTOBUF: &str = "application/octet-stream";

/// The v2 document of one served set: its ETag, JSON and protobuf forms.
struct V2Document {
    fingerprint: String,
    etag: String,
    json: bytes::Bytes,
    protobuf: bytes::Bytes,
}

/// Built on the first request, kept until the served set (CRDs) changes.
static V2_CACHE: std::sync::Mutex<Option<Arc<V2Document>>> = std::sync::Mutex::new(None);

/// GET /openapi/v2: every definition (built-ins and custom resources), in
/// JSON or, when asked, gnostic's protobuf form; `ETag` and
/// `If-None-Match` as upstream.
pub async fn v2(State(state): State<Arc<ApiState>>, headers: axum::http::HeaderMap) -> Response {
    let document = v2_document(&state);
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let etag = document.etag.clone();
    let with_etag = |mut response: Response| {
        if let Ok(value) = axum::http::HeaderValue::from_str(&etag) {
            response
                .headers_mut()
                .insert(axum::http::header::ETAG, value);
        }
        response
    };
    if header("if-none-match")
        .split(',')
        .any(|tag| tag.trim() == etag)
    {
        return with_etag(StatusCode::NOT_MODIFIED.into_response());
    }
    let (content_type, body) =
        if header("accept").contains("application/com.github.proto-openapi.spec.v2") {
            (V2_PROTOBUF, document.protobuf.clone())
        } else {
            ("application/json", document.json.clone())
        };
    with_etag(
        (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response(),
    )
}

fn v2_document(state: &ApiState) -> Arc<V2Document> {
    let resources = state.registry.all();
    let fingerprint = fingerprint(&resources);
    let mut cache = V2_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cached) = cache.as_ref().filter(|d| d.fingerprint == fingerprint) {
        return cached.clone();
    }
    let mut definitions = state.schemas.definitions().clone();
    for rt in &resources {
        if let Some((name, schema)) = custom_schema(rt) {
            definitions.insert(name, schema);
        }
    }
    let doc = crate::api::registry::openapi_v2::document(
        &definitions,
        &format!("v1.{}.0", super::KUBERNETES_MINOR),
    );
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    let protobuf = crate::api::registry::openapi_v2::encode(&doc);
    use sha2::Digest;
    let etag = format!("\"{}\"", hex::encode_upper(sha2::Sha256::digest(&json)));
    let built = Arc::new(V2Document {
        fingerprint,
        etag,
        json: json.into(),
        protobuf: protobuf.into(),
    });
    *cache = Some(built.clone());
    built
}

/// A custom resource's schema (its CRD's, with ObjectMeta and its kind).
fn custom_schema(rt: &ResourceType) -> Option<(String, Value)> {
    let custom = rt.custom.as_ref()?;
    let name = format!("{}.{}.{}", reverse_domain(&rt.group), rt.version, rt.kind);
    let mut schema = custom
        .schema
        .clone()
        .unwrap_or(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}));
    }
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
    Some((name, schema))
}

/// GET /openapi/v3.
pub async fn v3_root(State(state): State<Arc<ApiState>>) -> Response {
    let mut paths = Map::new();
    for (key, resources) in group_versions(&state) {
        let hash = fingerprint(&resources);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

/// GET /openapi/v3/<api/v1 | apis/g/v>.
pub async fn v3_document(State(state): State<Arc<ApiState>>, Path(path): Path<String>) -> Response {
    let key = path.trim_matches('/').to_string();
    let Some(resources) = group_versions(&state).remove(&key) else {
        return ApiError::NoSuchPath.into_response();
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in &resources {
        let (schema_name, schema) = match custom_schema(rt) {
            Some((name, schema)) => (name, Some(schema)),
            None => match state.schemas.definition_name(rt) {
                Some(name) => (name, None),
                None => continue,
            },
        };
        if let Some(schema) = schema {
            schemas.insert(schema_name.clone(), schema);
        }
        let base = if rt.group.is_empty() {
            format!("/api/{}", rt.version)
        } else {
            format!("/apis/{}/{}", rt.group, rt.version)
        };
        let scope = if rt.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        paths.insert(
            format!("{base}{scope}/{}/{{name}}", rt.resource),
            json!({
                "get": {"operationId": format!("read{}", rt.kind), "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get", "responses": ok},
                "put": {"operationId": format!("replace{}", rt.kind), "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "put", "responses": ok,
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]},
                "patch": {"operationId": format!("patch{}", rt.kind), "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch", "responses": ok,
                    "parameters": [
                        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
                    ]},
                "delete": {"operationId": format!("delete{}", rt.kind), "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "delete", "responses": ok},
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            }),
        );
        paths.insert(
            format!("{base}{scope}/{}", rt.resource),
            json!({
                "post": {"operationId": format!("create{}", rt.kind), "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "post", "responses": ok,
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]},
            }),
        );
    }
    // The built-in definitions travel with every document: CRDs refer to ObjectMeta too.
    for (name, schema) in state.schemas.definitions() {
        schemas
            .entry(name.clone())
            .or_insert_with(|| schema.clone());
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", super::KUBERNETES_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    });
    let mut response = json_response(StatusCode::OK, &doc);
    response.headers_mut().insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache, private"),
    );
    response
}

/// `api/v1` / `apis/<g>/<v>` → the resources served there.
fn group_versions(state: &ApiState) -> BTreeMap<String, Vec<Arc<ResourceType>>> {
    let mut out: BTreeMap<String, Vec<Arc<ResourceType>>> = BTreeMap::new();
    for rt in state.registry.all() {
        let key = if rt.group.is_empty() {
            format!("api/{}", rt.version)
        } else {
            format!("apis/{}/{}", rt.group, rt.version)
        };
        out.entry(key).or_default().push(rt);
    }
    out
}

/// Changes whenever the served set (or a CRD schema) changes.
fn fingerprint(resources: &[Arc<ResourceType>]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for rt in resources {
        rt.resource.hash(&mut hasher);
        rt.kind.hash(&mut hasher);
        if let Some(custom) = &rt.custom {
            custom
                .schema
                .as_ref()
                .map(|s| s.to_string())
                .hash(&mut hasher);
        }
    }
    format!("{:016X}", hasher.finish())
}

fn reverse_domain(group: &str) -> String {
    group.split('.').rev().collect::<Vec<_>>().join(".")
}
