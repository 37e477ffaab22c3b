//! Discovery: legacy (`APIVersions`, `APIGroupList`, `APIGroup`,
//! `APIResourceList`) and aggregated (`APIGroupDiscoveryList` v2 and v2beta1,
//! with its exact content type), all built from the resource table.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::body::{DISCOVERY_V2, DISCOVERY_V2BETA1, accept, json_response, typed_response};
use crate::api::ApiError;
use crate::api::registry::resources::ResourceType;

/// Which aggregated discovery version the client accepts, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = accept(headers).replace(' ', "");
    for part in accept.split(',') {
        if part.contains("as=APIGroupDiscoveryList") {
            if part.contains("v=v2beta1") {
                return Some(DISCOVERY_V2BETA1);
            }
            if part.contains("v=v2") {
                return Some(DISCOVERY_V2);
            }
        }
    }
    None
}

/// GET /api.
pub async fn core_versions(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(content_type) = aggregated(&headers) {
        return typed_response(
            StatusCode::OK,
            content_type,
            &discovery_list(&state, content_type, true),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.config.advertise}],
        }),
    )
}

/// GET /apis.
pub async fn groups(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(content_type) = aggregated(&headers) {
        return typed_response(
            StatusCode::OK,
            content_type,
            &discovery_list(&state, content_type, false),
        );
    }
    let groups: Vec<Value> = state
        .registry
        .group_order()
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| api_group(&state, &g))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// GET /api/v1, /apis/<g>, /apis/<g>/<v>.
pub fn group_or_version(
    state: &ApiState,
    path: &str,
    _headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version] => resource_list(state, "", version),
        ["apis", group] if state.registry.groups().contains_key(*group) => {
            Ok(json_response(StatusCode::OK, &api_group(state, group)))
        }
        ["apis", group, version] => resource_list(state, group, version),
        _ => Err(ApiError::NoSuchPath),
    }
}

fn api_group(state: &ApiState, group: &str) -> Value {
    let versions = state.registry.groups().remove(group).unwrap_or_default();
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(json!({})),
    })
}

fn resource_list(state: &ApiState, group: &str, version: &str) -> Result<Response, ApiError> {
    let resources: Vec<Arc<ResourceType>> = state
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return Err(ApiError::NoSuchPath);
    }
    let mut list = Vec::new();
    for rt in &resources {
        let mut entry = json!({
            "name": rt.resource,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": rt.verbs.names(),
        });
        if !rt.short_names.is_empty() {
            entry["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            entry["categories"] = json!(rt.categories);
        }
        list.push(entry);
        for sub in &rt.subresources {
            let (g, v, kind) = sub.response_kind(rt);
            let mut entry = json!({
                "name": format!("{}/{}", rt.resource, sub.name()),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": kind,
                "verbs": sub.verbs(),
            });
            if g != rt.group || v != rt.version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            list.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}),
    ))
}

/// The aggregated document for the core group (`core`) or all named groups.
fn discovery_list(state: &ApiState, content_type: &str, core: bool) -> Value {
    let api_version = if content_type == DISCOVERY_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    let groups = state.registry.groups();
    let all = state.registry.all();
    let items: Vec<Value> = state
        .registry
        .group_order()
        .into_iter()
        .filter(|g| g.is_empty() == core)
        .map(|group| {
            let versions: Vec<Value> = groups
                .get(&group)
                .into_iter()
                .flatten()
                .map(|version| {
                    let resources: Vec<Value> = all
                        .iter()
                        .filter(|r| r.group == group && &r.version == version)
                        .map(|r| aggregated_resource(r))
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let mut entry = json!({
        "resource": rt.resource,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs.names(),
    });
    if !rt.short_names.is_empty() {
        entry["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        entry["categories"] = json!(rt.categories);
    }
    if !rt.subresources.is_empty() {
        entry["subresources"] = rt
            .subresources
            .iter()
            .map(|sub| {
                let (g, v, kind) = sub.response_kind(rt);
                json!({"subresource": sub.name(), "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": sub.verbs()})
            })
            .collect();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn picks_aggregated_version_from_accept() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(aggregated(&headers), Some(DISCOVERY_V2));
        headers.insert("accept", HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"));
        assert_eq!(aggregated(&headers), Some(DISCOVERY_V2BETA1));
        headers.insert("accept", HeaderValue::from_static("application/json, */*"));
        assert_eq!(aggregated(&headers), None);
    }
}
