//! From the metrics' recommendation to the replica count the autoscaler
//! sets, as upstream's HPA controller does: stabilization (the highest
//! recommendation of the scale-down window, the lowest of the scale-up
//! window) and rate limits (`behavior` policies: Pods/Percent per period,
//! selectPolicy Max/Min/Disabled; without `behavior`, at most
//! max(2×current, 4) on the way up), then minReplicas/maxReplicas. Pure:
//! the caller keeps a [`History`] per autoscaler and passes the time in.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// Upstream's `--horizontal-pod-autoscaler-downscale-stabilization` default.
pub const DEFAULT_DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

/// How a policy measures change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A number of pods.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

/// One scaling policy: at most `value` pods (or percent) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Pods or Percent.
    pub kind: PolicyKind,
    /// How much.
    pub value: i32,
    /// Over how long.
    pub period: Duration,
}

/// Which policy wins when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The one allowing the most change (the default).
    Max,
    /// The one allowing the least change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// The rules of one direction, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Recommendations this far back are considered.
    pub stabilization_window: Duration,
    /// Which policy wins.
    pub select: Select,
    /// Rate limits.
    pub policies: Vec<Policy>,
}

/// `spec.behavior` with upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    /// Rules for scaling up.
    pub scale_up: Rules,
    /// Rules for scaling down.
    pub scale_down: Rules,
}

impl Behavior {
    /// The behavior of a spec, or None when the spec has none (upstream
    /// then uses the older rules: [`normalize`]). Unset fields take the
    /// API's defaults: scale up without a window, by max(4 pods, 100%)
    /// per 15 s; scale down after `downscale_window`, by 100% per 15 s.
    pub fn from_spec(
        spec: Option<&HorizontalPodAutoscalerBehavior>,
        downscale_window: Duration,
    ) -> Option<Self> {
        let spec = spec?;
        let fifteen = Duration::from_secs(15);
        Some(Behavior {
            scale_up: rules(
                spec.scale_up.as_ref(),
                Duration::ZERO,
                vec![
                    Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period: fifteen,
                    },
                    Policy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period: fifteen,
                    },
                ],
            ),
            scale_down: rules(
                spec.scale_down.as_ref(),
                downscale_window,
                vec![Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: fifteen,
                }],
            ),
        })
    }
}

fn rules(spec: Option<&HPAScalingRules>, window: Duration, policies: Vec<Policy>) -> Rules {
    let seconds = |s: i32| Duration::from_secs(s.max(0) as u64);
    let Some(spec) = spec else {
        return Rules {
            stabilization_window: window,
            select: Select::Max,
            policies,
        };
    };
    let given: Vec<Policy> = spec
        .policies
        .iter()
        .flatten()
        .map(|p| Policy {
            kind: if p.type_ == "Percent" {
                PolicyKind::Percent
            } else {
                PolicyKind::Pods
            },
            value: p.value,
            period: seconds(p.period_seconds),
        })
        .collect();
    Rules {
        stabilization_window: spec.stabilization_window_seconds.map_or(window, seconds),
        select: match spec.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
        policies: if given.is_empty() { policies } else { given },
    }
}

/// What one autoscaler recommended and did recently (upstream keeps the
/// same per HPA key, in memory).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Unstabilized recommendations.
    recommendations: Vec<(i32, Instant)>,
    /// Replicas added by each recent scale-up.
    scale_ups: Vec<(i32, Instant)>,
    /// Replicas removed by each recent scale-down.
    scale_downs: Vec<(i32, Instant)>,
}

impl History {
    /// Records the current size as the first recommendation, so a fresh
    /// autoscaler (or controller) does not scale down inside its window.
    pub fn start(&mut self, current: i32, now: Instant) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Records a rescale from `from` to `to` for the rate limits (only
    /// autoscalers with a behavior count them, as upstream).
    pub fn record_scale(&mut self, behavior: Option<&Behavior>, from: i32, to: i32, now: Instant) {
        let Some(behavior) = behavior else {
            return;
        };
        let (events, rules) = if to > from {
            (&mut self.scale_ups, &behavior.scale_up)
        } else {
            (&mut self.scale_downs, &behavior.scale_down)
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or_default();
        events.retain(|(_, at)| now.saturating_duration_since(*at) <= longest);
        events.push(((to - from).abs(), now));
    }
}

/// The count to set and the conditions that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Replicas to set.
    pub replicas: i32,
    /// AbleToScale (always True here): reason and message.
    pub able_to_scale: (&'static str, &'static str),
    /// ScalingLimited: whether limited, reason and message.
    pub scaling_limited: (bool, &'static str, &'static str),
}

/// The bounds of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The target's replicas now.
    pub current: i32,
    /// The metrics' recommendation.
    pub desired: i32,
    /// `minReplicas`.
    pub min: i32,
    /// `maxReplicas`.
    pub max: i32,
}

const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// Without `behavior`: the highest recommendation of the last
/// `downscale_window`, then at most max(2×current, 4) and within min/max.
pub fn normalize(
    history: &mut History,
    downscale_window: Duration,
    bounds: Bounds,
    now: Instant,
) -> Outcome {
    let stabilized = history
        .recommendations
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(*at) <= downscale_window)
        .map(|(r, _)| *r)
        .fold(bounds.desired, i32::max);
    history
        .recommendations
        .retain(|(_, at)| now.saturating_duration_since(*at) <= downscale_window);
    history.recommendations.push((bounds.desired, now));
    let able_to_scale = if stabilized != bounds.desired {
        DOWN_STABILIZED
    } else {
        READY
    };
    let scale_up_limit = (bounds.current.saturating_mul(2)).max(4);
    let (ceiling, ceiling_reason) = if bounds.max > scale_up_limit {
        (scale_up_limit, UP_LIMIT)
    } else {
        (bounds.max, TOO_MANY)
    };
    let (replicas, reason) = if stabilized < bounds.min {
        (bounds.min, TOO_FEW)
    } else if stabilized > ceiling {
        (ceiling, ceiling_reason)
    } else {
        (stabilized, WITHIN)
    };
    Outcome {
        replicas,
        able_to_scale,
        scaling_limited: (replicas != stabilized, reason.0, reason.1),
    }
}

/// With `behavior`: stabilized between the lowest recommendation of the
/// scale-up window and the highest of the scale-down window, then limited
/// by the policies of the direction it moves in and by min/max.
pub fn normalize_with_behavior(
    history: &mut History,
    behavior: &Behavior,
    bounds: Bounds,
    now: Instant,
) -> Outcome {
    let up_window = behavior.scale_up.stabilization_window;
    let down_window = behavior.scale_down.stabilization_window;
    let within = |at: &Instant, window: Duration| now.saturating_duration_since(*at) < window;
    let mut up = bounds.desired;
    let mut down = bounds.desired;
    for (recommendation, at) in &history.recommendations {
        if within(at, up_window) {
            up = up.min(*recommendation);
        }
        if within(at, down_window) {
            down = down.max(*recommendation);
        }
    }
    let stabilized = bounds.current.max(up).min(down);
    let longest = up_window.max(down_window);
    history
        .recommendations
        .retain(|(_, at)| now.saturating_duration_since(*at) < longest);
    history.recommendations.push((bounds.desired, now));
    let able_to_scale = if stabilized == bounds.desired {
        READY
    } else if bounds.desired >= bounds.current {
        UP_STABILIZED
    } else {
        DOWN_STABILIZED
    };
    let (replicas, reason) = rate_limited(history, behavior, bounds, stabilized, now);
    Outcome {
        replicas,
        able_to_scale,
        scaling_limited: (replicas != stabilized, reason.0, reason.1),
    }
}

/// The stabilized count within the policies of its direction and min/max.
fn rate_limited(
    history: &History,
    behavior: &Behavior,
    bounds: Bounds,
    desired: i32,
    now: Instant,
) -> (i32, (&'static str, &'static str)) {
    let current = bounds.current;
    if desired > current {
        let limit = scale_up_limit(current, history, &behavior.scale_up, now).max(current);
        let (ceiling, reason) = if bounds.max > limit {
            (limit, UP_LIMIT)
        } else {
            (bounds.max, TOO_MANY)
        };
        if desired > ceiling {
            return (ceiling, reason);
        }
    } else if desired < current {
        let limit = scale_down_limit(current, history, &behavior.scale_down, now).min(current);
        let (floor, reason) = if bounds.min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (bounds.min, TOO_FEW)
        };
        if desired < floor {
            return (floor, reason);
        }
    }
    (desired, WITHIN)
}

/// Replicas changed by the events of the last `period`.
fn changed_within(events: &[(i32, Instant)], period: Duration, now: Instant) -> i32 {
    events
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(*at) < period)
        .map(|(n, _)| n)
        .sum()
}

/// The replicas at the start of a policy's period.
fn period_start(current: i32, history: &History, period: Duration, now: Instant) -> i32 {
    current - changed_within(&history.scale_ups, period, now)
        + changed_within(&history.scale_downs, period, now)
}

/// The most replicas the scale-up policies allow now.
fn scale_up_limit(current: i32, history: &History, rules: &Rules, now: Instant) -> i32 {
    let proposals = rules.policies.iter().map(|policy| {
        let start = period_start(current, history, policy.period, now);
        match policy.kind {
            PolicyKind::Pods => start + policy.value,
            PolicyKind::Percent => {
                (start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i32
            }
        }
    });
    match rules.select {
        Select::Disabled => current,
        Select::Min => proposals.min().unwrap_or(i32::MAX),
        Select::Max => proposals.max().unwrap_or(i32::MIN),
    }
}

/// The fewest replicas the scale-down policies allow now.
fn scale_down_limit(current: i32, history: &History, rules: &Rules, now: Instant) -> i32 {
    let proposals = rules.policies.iter().map(|policy| {
        let start = period_start(current, history, policy.period, now);
        match policy.kind {
            PolicyKind::Pods => start - policy.value,
            PolicyKind::Percent => (start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i32,
        }
    });
    match rules.select {
        Select::Disabled => current,
        // The least change downwards is the highest floor.
        Select::Min => proposals.max().unwrap_or(i32::MIN),
        Select::Max => proposals.min().unwrap_or(i32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn bounds(current: i32, desired: i32) -> Bounds {
        Bounds {
            current,
            desired,
            min: 1,
            max: 10,
        }
    }

    fn behavior(json: serde_json::Value) -> Behavior {
        let spec: HorizontalPodAutoscalerBehavior = serde_json::from_value(json).expect("behavior");
        Behavior::from_spec(Some(&spec), DEFAULT_DOWNSCALE_STABILIZATION).expect("some")
    }

    #[test]
    fn behavior_defaults_are_the_apis() {
        let b = behavior(serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 10}}));
        assert_eq!(b.scale_down.stabilization_window, secs(10));
        assert_eq!(
            b.scale_down.policies,
            [Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period: secs(15)
            }]
        );
        assert_eq!(b.scale_up.stabilization_window, Duration::ZERO);
        assert_eq!(b.scale_up.policies.len(), 2);
        assert_eq!(b.scale_up.select, Select::Max);
        let empty = behavior(serde_json::json!({}));
        assert_eq!(empty.scale_down.stabilization_window, secs(300));
        assert_eq!(
            Behavior::from_spec(None, DEFAULT_DOWNSCALE_STABILIZATION),
            None
        );
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window() {
        let t0 = Instant::now();
        let mut history = History::default();
        history.start(5, t0);
        // Load dropped: 2 would do, but 5 was recommended within the window.
        let out = normalize(&mut history, secs(300), bounds(5, 2), t0 + secs(60));
        assert_eq!(out.replicas, 5);
        assert_eq!(out.able_to_scale.0, "ScaleDownStabilized");
        // Once the old recommendation leaves the window, the highest left wins.
        let out = normalize(&mut history, secs(300), bounds(5, 1), t0 + secs(301));
        assert_eq!(out.replicas, 2);
        let out = normalize(&mut history, secs(300), bounds(2, 1), t0 + secs(400));
        assert_eq!((out.replicas, out.able_to_scale.0), (1, "ReadyForNewScale"));
    }

    #[test]
    fn without_behavior_scale_up_is_at_most_double_or_four() {
        let t0 = Instant::now();
        let mut history = History::default();
        let out = normalize(&mut history, secs(300), bounds(1, 9), t0);
        assert_eq!(out.replicas, 4);
        assert_eq!(out.scaling_limited, (true, UP_LIMIT.0, UP_LIMIT.1));
        let out = normalize(&mut history, secs(300), bounds(6, 12), t0);
        assert_eq!(out.replicas, 10);
        assert_eq!(out.scaling_limited.1, "TooManyReplicas");
        let out = normalize(&mut history, secs(0), bounds(3, 0), t0 + secs(1));
        assert_eq!((out.replicas, out.scaling_limited.1), (1, "TooFewReplicas"));
        let out = normalize(&mut history, secs(0), bounds(3, 5), t0 + secs(2));
        assert_eq!(out.scaling_limited, (false, WITHIN.0, WITHIN.1));
    }

    #[test]
    fn scale_down_window_keeps_the_highest_recent_recommendation() {
        let b = behavior(serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 60}}));
        let t0 = Instant::now();
        let mut history = History::default();
        history.start(4, t0);
        let out = normalize_with_behavior(&mut history, &b, bounds(4, 3), t0 + secs(10));
        assert_eq!(out.replicas, 4);
        assert_eq!(out.able_to_scale.0, "ScaleDownStabilized");
        let out = normalize_with_behavior(&mut history, &b, bounds(4, 1), t0 + secs(65));
        // 3 (at t0+10) is still in the window.
        assert_eq!(out.replicas, 3);
        let out = normalize_with_behavior(&mut history, &b, bounds(3, 1), t0 + secs(200));
        assert_eq!(out.replicas, 1);
        assert_eq!(out.able_to_scale.0, "ReadyForNewScale");
    }

    #[test]
    fn scale_up_window_keeps_the_lowest_recent_recommendation() {
        let b = behavior(serde_json::json!({"scaleUp": {"stabilizationWindowSeconds": 30}}));
        let t0 = Instant::now();
        let mut history = History::default();
        history.start(2, t0);
        let out = normalize_with_behavior(&mut history, &b, bounds(2, 6), t0 + secs(5));
        assert_eq!(
            (out.replicas, out.able_to_scale.0),
            (2, "ScaleUpStabilized")
        );
        let out = normalize_with_behavior(&mut history, &b, bounds(2, 8), t0 + secs(31));
        assert_eq!(out.replicas, 6);
    }

    #[test]
    fn pods_and_percent_policies_limit_the_rate() {
        // Up: at most 1 pod per 60 s, or 50% per 60 s; Max picks the larger.
        let b = behavior(serde_json::json!({
            "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}, {"type": "Percent", "value": 50, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
        }));
        let t0 = Instant::now();
        let mut history = History::default();
        let out = normalize_with_behavior(&mut history, &b, bounds(4, 10), t0);
        assert_eq!(out.replicas, 6);
        assert_eq!(out.scaling_limited, (true, UP_LIMIT.0, UP_LIMIT.1));
        history.record_scale(Some(&b), 4, 6, t0);
        // Within the same period the budget is spent: no further growth.
        let out = normalize_with_behavior(&mut history, &b, bounds(6, 10), t0 + secs(30));
        assert_eq!(out.replicas, 6);
        // A period later, 50% of 6.
        let out = normalize_with_behavior(&mut history, &b, bounds(6, 10), t0 + secs(61));
        assert_eq!(out.replicas, 9);
        // Down by 2 per minute.
        let out = normalize_with_behavior(&mut history, &b, bounds(9, 1), t0 + secs(62));
        assert_eq!((out.replicas, out.scaling_limited.1), (7, "ScaleDownLimit"));
        history.record_scale(Some(&b), 9, 7, t0 + secs(62));
        let out = normalize_with_behavior(&mut history, &b, bounds(7, 1), t0 + secs(70));
        assert_eq!(out.replicas, 7);
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let t0 = Instant::now();
        let min = behavior(
            serde_json::json!({"scaleUp": {"selectPolicy": "Min", "policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}}),
        );
        let out = normalize_with_behavior(&mut History::default(), &min, bounds(4, 10), t0);
        assert_eq!(out.replicas, 5);
        let disabled = behavior(
            serde_json::json!({"scaleDown": {"selectPolicy": "Disabled", "stabilizationWindowSeconds": 0}}),
        );
        let out = normalize_with_behavior(&mut History::default(), &disabled, bounds(4, 1), t0);
        assert_eq!(out.replicas, 4);
        // Percent rounds up on the way up so that 1 replica can grow.
        let percent = behavior(
            serde_json::json!({"scaleUp": {"policies": [{"type": "Percent", "value": 10, "periodSeconds": 15}]}}),
        );
        let out = normalize_with_behavior(&mut History::default(), &percent, bounds(1, 3), t0);
        assert_eq!(out.replicas, 2);
    }

    #[test]
    fn min_and_max_bound_the_result() {
        let b = behavior(serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
        let t0 = Instant::now();
        let out = normalize_with_behavior(&mut History::default(), &b, bounds(8, 20), t0);
        assert_eq!(
            (out.replicas, out.scaling_limited.1),
            (10, "TooManyReplicas")
        );
        // Below maxReplicas, the default policies (4 pods or 100% per 15 s) bind.
        let out = normalize_with_behavior(&mut History::default(), &b, bounds(3, 20), t0);
        assert_eq!((out.replicas, out.scaling_limited.1), (7, "ScaleUpLimit"));
        let out = normalize_with_behavior(&mut History::default(), &b, bounds(3, 0), t0);
        assert_eq!((out.replicas, out.scaling_limited.1), (1, "TooFewReplicas"));
    }
}
