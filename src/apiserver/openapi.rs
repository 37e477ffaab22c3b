//! OpenAPI v3 documents: a root listing each group-version, and per
//! group-version documents with one path per resource whose PATCH carries
//! `x-kubernetes-group-version-kind` and the `fieldValidation` parameter (what
//! kubectl's validation looks for), plus the schemas (`kubectl explain`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::body::json_response;
use crate::api::ApiError;
use crate::api::resources::ResourceType;

/// GET /openapi/v2: not served; kubectl falls back to its compiled-in knowledge.
pub async fn v2() -> Response {
    ApiError::NoSuchPath.into_response()
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
        let (schema_name, schema) = match &rt.custom {
            Some(custom) => {
                let name = format!("{}.{}.{}", reverse_domain(&rt.group), rt.version, rt.kind);
                let mut schema = custom.schema.clone().unwrap_or(
                    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
                );
                if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                    props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]}));
                }
                schema["x-kubernetes-group-version-kind"] =
                    json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]);
                (name, Some(schema))
            }
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
