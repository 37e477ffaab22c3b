//! Node admission: each node gets a /24 of `--cluster-cidr` as its pod CIDR
//! (k3s's default node CIDR mask), once; it never changes afterwards.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::ApiState;
use super::handlers::Request;
use crate::api::{ApiError, FieldError, values::meta};

/// Prefix length of each node's pod CIDR.
const NODE_PREFIX: u8 = 24;

/// Nodes' storage hooks: the pod CIDR, allocated before the write.
pub struct Nodes;

#[async_trait::async_trait]
impl super::hooks::StorageHooks for Nodes {
    /// Gives a new node the first free /24, or keeps the one it asked for
    /// if free.
    async fn before_write(
        &self,
        state: &ApiState,
        req: &Request,
        node: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let previous = old
            .and_then(|o| o.pointer("/spec/podCIDR"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let wanted = node
            .pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from);
        if let Some(previous) = previous {
            if wanted.as_deref().is_some_and(|w| w != previous) {
                return Err(ApiError::invalid(
                    "",
                    "Node",
                    meta::name(node),
                    vec![FieldError::forbidden(
                        "spec.podCIDR",
                        "node updates may not change podCIDR except from \"\" to valid",
                    )],
                ));
            }
            set(node, previous);
            return Ok(());
        }
        let taken = in_use(state, req, node).await?;
        let cluster = state.config.cluster_cidr;
        let chosen = match wanted {
            Some(w) => {
                if taken.contains(&w) {
                    return Err(ApiError::invalid(
                        "",
                        "Node",
                        meta::name(node),
                        vec![FieldError::invalid(
                            "spec.podCIDR",
                            &json!(w),
                            "already allocated to another node",
                        )],
                    ));
                }
                w
            }
            None => {
                let count = if cluster.prefix >= NODE_PREFIX {
                    1
                } else {
                    1u32 << (NODE_PREFIX - cluster.prefix)
                };
                let block = 1u32 << (32 - NODE_PREFIX);
                (0..count)
                    .map(|i| {
                        format!(
                            "{}/{NODE_PREFIX}",
                            Ipv4Addr::from(u32::from(cluster.base) + i * block)
                        )
                    })
                    .find(|c| !taken.contains(c))
                    .ok_or_else(|| {
                        ApiError::internal("no pod CIDR left in --cluster-cidr for this node")
                    })?
            }
        };
        set(node, &chosen);
        Ok(())
    }
}

fn set(node: &mut Value, cidr: &str) {
    node["spec"]["podCIDR"] = json!(cidr);
    node["spec"]["podCIDRs"] = json!([cidr]);
}

async fn in_use(
    state: &ApiState,
    req: &Request,
    node: &Value,
) -> Result<HashSet<String>, ApiError> {
    let me = meta::name(node);
    Ok(state
        .stored_objects(&req.rt.key_prefix(None))
        .await?
        .iter()
        .filter(|other| meta::name(other) != me)
        .filter_map(|other| {
            other
                .pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect())
}
