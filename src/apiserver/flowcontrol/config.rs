//! The flow-control configuration in force: the stored FlowSchemas and
//! PriorityLevelConfigurations, read into schemas in matching order and
//! levels with their shapes and shares. Pure: built from object values.

use std::collections::BTreeMap;

use k8s_openapi::api::flowcontrol::v1::{
    FlowSchema, PolicyRulesWithSubjects, PriorityLevelConfiguration,
};
use serde_json::Value;

use super::concurrency::Share;
use super::queueset::{Queuing, Shape};
use crate::api::registry::strategy::flowcontrol as bootstrap;

/// How a schema splits its requests into flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distinguisher {
    /// By user name.
    ByUser,
    /// By namespace.
    ByNamespace,
}

/// A FlowSchema, ready to match.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Its name.
    pub name: String,
    /// Its UID ("" for one kelp imagined because it is not stored).
    pub uid: String,
    /// The priority level it sends requests to.
    pub level: String,
    /// `matchingPrecedence`.
    pub precedence: i32,
    /// Its flow distinguisher.
    pub distinguisher: Option<Distinguisher>,
    /// Its rules.
    pub rules: Vec<PolicyRulesWithSubjects>,
}

/// A PriorityLevelConfiguration, ready to dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSpec {
    /// Its name.
    pub name: String,
    /// Its UID ("" when imagined).
    pub uid: String,
    /// Exempt, Reject or Queue.
    pub shape: Shape,
    /// `nominalConcurrencyShares`.
    pub shares: u32,
    /// `lendablePercent`.
    pub lendable_percent: u32,
    /// `borrowingLimitPercent`.
    pub borrowing_limit_percent: Option<u32>,
}

impl LevelSpec {
    /// Its share of the server's seats.
    pub fn share(&self) -> Share {
        Share {
            shares: self.shares,
            lendable_percent: self.lendable_percent,
            borrowing_limit_percent: self.borrowing_limit_percent,
            exempt: self.shape == Shape::Exempt,
        }
    }
}

/// The configuration: schemas in matching order, levels by name.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Schemas whose level exists, by (precedence, name); `exempt` and
    /// `catch-all` always present.
    pub schemas: Vec<Schema>,
    /// Levels by name; `exempt` and `catch-all` always present.
    pub levels: BTreeMap<String, LevelSpec>,
}

impl Config {
    /// Reads the stored objects (FlowSchemas and PriorityLevelConfigurations
    /// as JSON, in any order), imagining the mandatory ones that are missing.
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Config {
        let mut schemas = Vec::new();
        let mut levels = BTreeMap::new();
        for obj in objects {
            match obj["kind"].as_str() {
                Some("FlowSchema") => match serde_json::from_value::<FlowSchema>(obj.clone()) {
                    Ok(fs) => schemas.push(schema(&fs)),
                    Err(e) => tracing::warn!(err = %e, "unreadable FlowSchema ignored"),
                },
                Some("PriorityLevelConfiguration") => {
                    match serde_json::from_value::<PriorityLevelConfiguration>(obj.clone())
                        .ok()
                        .filter(|_| super::bootstrap::priority_level_is_usable(obj))
                        .and_then(|pl| level(&pl))
                    {
                        Some(level) => {
                            levels.insert(level.name.clone(), level);
                        }
                        None => {
                            tracing::warn!(name = %obj["metadata"]["name"], "unusable PriorityLevelConfiguration ignored")
                        }
                    }
                }
                _ => {}
            }
        }
        for obj in bootstrap::mandatory_priority_levels() {
            if let Ok(pl) = serde_json::from_value::<PriorityLevelConfiguration>(obj)
                && let Some(level) = level(&pl)
            {
                levels.entry(level.name.clone()).or_insert(level);
            }
        }
        schemas.retain(|s| levels.contains_key(&s.level));
        for obj in bootstrap::mandatory_flow_schemas() {
            if let Ok(fs) = serde_json::from_value::<FlowSchema>(obj) {
                let imagined = schema(&fs);
                if !schemas.iter().any(|s| s.name == imagined.name) {
                    schemas.push(imagined);
                }
            }
        }
        schemas.sort_by(|a, b| (a.precedence, &a.name).cmp(&(b.precedence, &b.name)));
        Config { schemas, levels }
    }
}

fn schema(fs: &FlowSchema) -> Schema {
    let spec = fs.spec.clone().unwrap_or_default();
    Schema {
        name: fs.metadata.name.clone().unwrap_or_default(),
        uid: fs.metadata.uid.clone().unwrap_or_default(),
        level: spec.priority_level_configuration.name,
        precedence: spec.matching_precedence.unwrap_or(1000),
        distinguisher: spec
            .distinguisher_method
            .and_then(|d| match d.type_.as_str() {
                "ByUser" => Some(Distinguisher::ByUser),
                "ByNamespace" => Some(Distinguisher::ByNamespace),
                _ => None,
            }),
        rules: spec.rules.unwrap_or_default(),
    }
}

/// None when the spec is not one a level can be built from (the caller
/// first applies upstream's union checks).
fn level(pl: &PriorityLevelConfiguration) -> Option<LevelSpec> {
    let spec = pl.spec.as_ref()?;
    let percent = |p: Option<i32>| p.map(|v| v.clamp(0, 100) as u32);
    let (shape, shares, lendable, borrowing) = match spec.type_.as_str() {
        "Exempt" => {
            let exempt = spec.exempt.clone().unwrap_or_default();
            (
                Shape::Exempt,
                exempt.nominal_concurrency_shares.unwrap_or(0).max(0) as u32,
                percent(exempt.lendable_percent).unwrap_or(0),
                None,
            )
        }
        "Limited" => {
            let limited = spec.limited.as_ref()?;
            let response = limited.limit_response.clone().unwrap_or_default();
            let shape = match response.type_.as_str() {
                "Queue" => {
                    let q = response.queuing.unwrap_or_default();
                    let queues = q.queues.unwrap_or(64).max(1) as usize;
                    Shape::Queue(Queuing {
                        queues,
                        hand_size: (q.hand_size.unwrap_or(8).max(1) as usize).min(queues),
                        queue_length_limit: q.queue_length_limit.unwrap_or(50).max(1) as usize,
                    })
                }
                _ => Shape::Reject,
            };
            (
                shape,
                limited.nominal_concurrency_shares.unwrap_or(30).max(0) as u32,
                percent(limited.lendable_percent).unwrap_or(0),
                limited.borrowing_limit_percent.map(|p| p.max(0) as u32),
            )
        }
        _ => return None,
    };
    Some(LevelSpec {
        name: pl.metadata.name.clone()?,
        uid: pl.metadata.uid.clone().unwrap_or_default(),
        shape,
        shares,
        lendable_percent: lendable,
        borrowing_limit_percent: borrowing,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mandatory_objects_are_imagined_and_schemas_sorted() {
        let objects = [
            json!({"kind": "FlowSchema", "metadata": {"name": "b", "uid": "u-b"},
                   "spec": {"priorityLevelConfiguration": {"name": "small"}, "matchingPrecedence": 500,
                            "distinguisherMethod": {"type": "ByUser"}}}),
            json!({"kind": "FlowSchema", "metadata": {"name": "a", "uid": "u-a"},
                   "spec": {"priorityLevelConfiguration": {"name": "small"}, "matchingPrecedence": 500}}),
            json!({"kind": "FlowSchema", "metadata": {"name": "dangling"},
                   "spec": {"priorityLevelConfiguration": {"name": "missing"}}}),
            json!({"kind": "PriorityLevelConfiguration", "metadata": {"name": "small", "uid": "u-s"},
                   "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1,
                            "limitResponse": {"type": "Queue", "queuing": {"queues": 1, "handSize": 1, "queueLengthLimit": 2}}}}}),
        ];
        let config = Config::from_objects(&objects);
        let names: Vec<&str> = config.schemas.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["exempt", "a", "b", "catch-all"]);
        assert_eq!(config.schemas[0].uid, "", "imagined");
        assert_eq!(config.schemas[2].distinguisher, Some(Distinguisher::ByUser));
        let small = &config.levels["small"];
        assert_eq!(
            small.shape,
            Shape::Queue(Queuing {
                queues: 1,
                hand_size: 1,
                queue_length_limit: 2
            })
        );
        assert_eq!(small.shares, 1);
        assert_eq!(config.levels["exempt"].shape, Shape::Exempt);
        assert_eq!(config.levels["catch-all"].shape, Shape::Reject);
        assert_eq!(config.levels["catch-all"].shares, 5);
    }
}
