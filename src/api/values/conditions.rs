//! Status conditions, one rule for every kind: a condition's
//! `lastTransitionTime` moves only when its status does (the API
//! conventions). Two ways to set one, as upstream has them:
//! [`upsert`] (`meta.SetStatusCondition`: in place, everything but the
//! transition time replaced) and [`set`] (the workload controllers'
//! `SetCondition`: nothing changes while status and reason hold; otherwise
//! the new one replaces the old, moved last). Typed conditions and the JSON
//! ones components build by hand share them through [`Condition`].

use k8s_openapi::api::apps::v1::DeploymentCondition;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition;
use k8s_openapi::api::batch::v1::JobCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// What the rules need of a condition.
pub trait Condition {
    /// How its transition time is written.
    type Time: Clone;
    /// Its `type`.
    fn kind(&self) -> &str;
    /// Its `status` ("True", "False", "Unknown").
    fn status(&self) -> &str;
    /// Its `reason`.
    fn reason(&self) -> Option<&str>;
    /// Its `lastTransitionTime`.
    fn transition(&self) -> Option<Self::Time>;
    /// Sets its `lastTransitionTime`.
    fn set_transition(&mut self, at: Option<Self::Time>);
}

/// Gives `new` the transition time of its kind in `previous` while the
/// status holds (it keeps its own, "now", when the status changed or the
/// condition is new).
pub fn carry_transition<C: Condition>(previous: &[C], new: &mut C) {
    if let Some(old) = previous
        .iter()
        .find(|c| c.kind() == new.kind() && c.status() == new.status())
        && let Some(since) = old.transition()
    {
        new.set_transition(Some(since));
    }
}

/// Sets `new` in place of the condition of its kind, or appends it, with
/// the transition time carried over while the status holds.
pub fn upsert<C: Condition>(conditions: &mut Vec<C>, mut new: C) {
    carry_transition(conditions, &mut new);
    match conditions.iter_mut().find(|c| c.kind() == new.kind()) {
        Some(old) => *old = new,
        None => conditions.push(new),
    }
}

/// Leaves `conditions` as they are when the condition of `new`'s kind has
/// its status and reason; otherwise replaces it with `new` (last), the
/// transition time carried over while the status holds. Whether it changed.
pub fn set<C: Condition>(conditions: &mut Vec<C>, mut new: C) -> bool {
    if conditions
        .iter()
        .any(|c| c.kind() == new.kind() && c.status() == new.status() && c.reason() == new.reason())
    {
        return false;
    }
    carry_transition(conditions, &mut new);
    conditions.retain(|c| c.kind() != new.kind());
    conditions.push(new);
    true
}

/// A condition as JSON (`{"type", "status", "reason", "lastTransitionTime"}`).
impl Condition for Value {
    type Time = String;
    fn kind(&self) -> &str {
        self["type"].as_str().unwrap_or_default()
    }
    fn status(&self) -> &str {
        self["status"].as_str().unwrap_or_default()
    }
    fn reason(&self) -> Option<&str> {
        self["reason"].as_str()
    }
    fn transition(&self) -> Option<String> {
        self["lastTransitionTime"].as_str().map(String::from)
    }
    fn set_transition(&mut self, at: Option<String>) {
        self["lastTransitionTime"] = json!(at);
    }
}

/// The typed conditions: each has `type_`, `status`, `reason` and
/// `last_transition_time` under the same names.
macro_rules! typed_condition {
    ($($ty:ty),*) => {$(
        impl Condition for $ty {
            type Time = Time;
            fn kind(&self) -> &str {
                &self.type_
            }
            fn status(&self) -> &str {
                &self.status
            }
            fn reason(&self) -> Option<&str> {
                self.reason.as_deref()
            }
            fn transition(&self) -> Option<Time> {
                self.last_transition_time.clone()
            }
            fn set_transition(&mut self, at: Option<Time>) {
                self.last_transition_time = at;
            }
        }
    )*};
}

typed_condition!(
    DeploymentCondition,
    JobCondition,
    HorizontalPodAutoscalerCondition
);

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(kind: &str, status: &str, reason: &str, at: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "lastTransitionTime": at})
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let previous = vec![
            cond("Ready", "True", "A", "T0"),
            cond("Other", "False", "B", "T0"),
        ];
        let mut held = cond("Ready", "True", "C", "T1");
        carry_transition(&previous, &mut held);
        assert_eq!(held["lastTransitionTime"], "T0");
        let mut flipped = cond("Other", "True", "B", "T1");
        carry_transition(&previous, &mut flipped);
        assert_eq!(flipped["lastTransitionTime"], "T1");
        let mut new = cond("New", "True", "", "T1");
        carry_transition(&previous, &mut new);
        assert_eq!(new["lastTransitionTime"], "T1");
    }

    #[test]
    fn upsert_replaces_in_place_and_keeps_the_order() {
        let mut conditions = vec![cond("A", "True", "x", "T0"), cond("B", "True", "y", "T0")];
        upsert(&mut conditions, cond("A", "True", "z", "T1"));
        assert_eq!(conditions[0]["reason"], "z");
        assert_eq!(conditions[0]["lastTransitionTime"], "T0");
        upsert(&mut conditions, cond("C", "False", "w", "T1"));
        assert_eq!(conditions.len(), 3);
        assert_eq!(conditions[2]["type"], "C");
    }

    #[test]
    fn set_changes_nothing_while_status_and_reason_hold() {
        let mut conditions = vec![cond("A", "True", "x", "T0"), cond("B", "True", "y", "T0")];
        assert!(!set(&mut conditions, cond("A", "True", "x", "T1")));
        assert_eq!(conditions[0]["lastTransitionTime"], "T0");
        assert!(set(&mut conditions, cond("A", "True", "other", "T1")));
        assert_eq!(
            conditions[1]["type"], "A",
            "a replaced condition moves last"
        );
        assert_eq!(conditions[1]["lastTransitionTime"], "T0");
        assert!(set(&mut conditions, cond("A", "False", "other", "T2")));
        assert_eq!(conditions[1]["lastTransitionTime"], "T2");
    }

    #[test]
    fn typed_conditions_follow_the_same_rule() {
        let t = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let mut conditions = vec![DeploymentCondition {
            type_: "Available".into(),
            status: "True".into(),
            reason: Some("MinimumReplicasAvailable".into()),
            last_transition_time: Some(t(1)),
            ..Default::default()
        }];
        let update = DeploymentCondition {
            type_: "Available".into(),
            status: "True".into(),
            reason: Some("Other".into()),
            last_transition_time: Some(t(2)),
            ..Default::default()
        };
        assert!(set(&mut conditions, update));
        assert_eq!(conditions[0].last_transition_time, Some(t(1)));
    }
}
