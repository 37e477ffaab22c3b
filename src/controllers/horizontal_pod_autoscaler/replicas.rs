//! Upstream's replica calculator for Resource metrics: the ratio of usage to
//! target times the ready pods, within a tolerance (10%) of 1 meaning "no
//! change". Pods that are pending, not yet ready (CPU only, during their
//! first minutes) or without metrics are left out, then put back
//! conservatively: on a scale-up as using nothing, on a scale-down as using
//! the target, and the decision is dropped if that flips its direction. Pure:
//! the caller gathers pods and metrics; values are in thousandths of a unit
//! (millicores, millibytes), as upstream computes them.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};

/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`: how
/// long after start a pod's CPU may be skewed by its start-up.
const CPU_INITIALIZATION_PERIOD: SignedDuration = SignedDuration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
const INITIAL_READINESS_DELAY: SignedDuration = SignedDuration::from_secs(30);

/// How far the usage ratio may be from 1 before the count changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Below 1.
    pub scale_down: f64,
    /// Above 1.
    pub scale_up: f64,
}

impl Default for Tolerances {
    /// Upstream's `--horizontal-pod-autoscaler-tolerance` (0.1) both ways.
    fn default() -> Self {
        Tolerances {
            scale_down: 0.1,
            scale_up: 0.1,
        }
    }
}

impl Tolerances {
    fn within(&self, ratio: f64) -> bool {
        (1.0 - self.scale_down) <= ratio && ratio <= (1.0 + self.scale_up)
    }
}

/// What the calculator needs to know of a pod the target's selector matches.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    /// Name (metrics are keyed by it).
    pub name: String,
    /// `status.phase`.
    pub phase: String,
    /// Being deleted.
    pub deleting: bool,
    /// The Ready condition: status and last transition.
    pub ready: Option<(bool, Timestamp)>,
    /// `status.startTime`.
    pub start_time: Option<Timestamp>,
    /// The resource's request summed over the measured containers
    /// (thousandths), or why there is none.
    pub request: Result<i64, String>,
}

/// One pod's usage (thousandths of the unit) and when it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    /// Usage.
    pub value: i64,
    /// End of the measuring window.
    pub timestamp: Timestamp,
    /// Length of the measuring window.
    pub window: SignedDuration,
}

/// The kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Average per pod, thousandths.
    AverageValue(i64),
}

/// The calculator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposal {
    /// Replicas the metric asks for.
    pub replicas: i32,
    /// Current utilization (percent of requests), for Utilization targets.
    pub utilization: Option<i32>,
    /// Current average per measured pod, thousandths.
    pub average: i64,
}

/// Proposes a replica count for one Resource metric. `cpu` tells whether
/// the resource is CPU (only CPU discounts pods that are starting up).
pub fn propose(
    current: i32,
    target: Target,
    cpu: bool,
    pods: &[PodFacts],
    mut metrics: HashMap<String, PodMetric>,
    tolerances: Tolerances,
    now: Timestamp,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group(pods, &metrics, cpu, now);
    metrics.retain(|name, _| !groups.ignored.contains(name) && !groups.unready.contains(name));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let values: HashMap<String, i64> = metrics.iter().map(|(n, m)| (n.clone(), m.value)).collect();
    let requests = match target {
        Target::Utilization(_) => pods
            .iter()
            .map(|p| p.request.clone().map(|r| (p.name.clone(), r)))
            .collect::<Result<HashMap<_, _>, _>>()?,
        Target::AverageValue(_) => HashMap::new(),
    };
    let ratio_of = |values: &HashMap<String, i64>| ratio(target, values, &requests);
    let (usage_ratio, utilization, average) = ratio_of(&values)?;
    let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    let proposal = |replicas| Proposal {
        replicas,
        utilization,
        average,
    };
    if !scale_up_with_unready && groups.missing.is_empty() {
        if tolerances.within(usage_ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal((usage_ratio * groups.ready as f64).ceil() as i32));
    }
    let mut values = values;
    if !groups.missing.is_empty() {
        for name in &groups.missing {
            let value = if usage_ratio < 1.0 {
                // On a scale-down, a pod without metrics counts as using the target.
                match target {
                    Target::Utilization(t) => {
                        requests.get(name).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
                    }
                    Target::AverageValue(v) => v,
                }
            } else {
                0
            };
            if usage_ratio != 1.0 {
                values.insert(name.clone(), value);
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            values.insert(name.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio_of(&values)?;
    if tolerances.within(new_ratio)
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * values.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// Usage ratio, utilization (percent) and raw average of the measured pods.
fn ratio(
    target: Target,
    values: &HashMap<String, i64>,
    requests: &HashMap<String, i64>,
) -> Result<(f64, Option<i32>, i64), String> {
    match target {
        Target::Utilization(t) => {
            let (mut used, mut requested, mut count) = (0i64, 0i64, 0i64);
            for (name, value) in values {
                // Metrics of pods outside the selector's set are extraneous.
                let Some(request) = requests.get(name) else {
                    continue;
                };
                used += value;
                requested += request;
                count += 1;
            }
            if requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let utilization = (used * 100 / requested) as i32;
            Ok((
                f64::from(utilization) / f64::from(t.max(1)),
                Some(utilization),
                used / count,
            ))
        }
        Target::AverageValue(v) => {
            let total: i64 = values.values().sum();
            let average = total / values.len().max(1) as i64;
            Ok((average as f64 / v.max(1) as f64, None, average))
        }
    }
}

/// Pods sorted as upstream's `groupPods` sorts them.
#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

fn group(
    pods: &[PodFacts],
    metrics: &HashMap<String, PodMetric>,
    cpu: bool,
    now: Timestamp,
) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            groups.ignored.insert(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            groups.unready.insert(pod.name.clone());
            continue;
        }
        let Some(metric) = metrics.get(&pod.name) else {
            groups.missing.insert(pod.name.clone());
            continue;
        };
        if cpu && cpu_unready(pod, metric, now) {
            groups.unready.insert(pod.name.clone());
            continue;
        }
        groups.ready += 1;
    }
    groups
}

/// Whether a pod's CPU sample should wait: the pod is not ready, or (in its
/// first minutes) was sampled before a full window after becoming ready.
fn cpu_unready(pod: &PodFacts, metric: &PodMetric, now: Timestamp) -> bool {
    let (Some((ready, transition)), Some(start)) = (pod.ready, pod.start_time) else {
        return true;
    };
    if now.duration_since(start) < CPU_INITIALIZATION_PERIOD {
        !ready || metric.timestamp < transition + metric.window
    } else {
        !ready && transition.duration_since(start) < INITIAL_READINESS_DELAY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("time")
    }

    /// A Running pod started long ago, ready, requesting `request` millis.
    fn pod(name: &str, request: i64) -> PodFacts {
        PodFacts {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            ready: Some((true, t(-3000))),
            start_time: Some(t(-3600)),
            request: Ok(request),
        }
    }

    fn metrics(values: &[(&str, i64)]) -> HashMap<String, PodMetric> {
        values
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        value: *v,
                        timestamp: t(-5),
                        window: SignedDuration::from_secs(10),
                    },
                )
            })
            .collect()
    }

    fn run(
        current: i32,
        target: Target,
        pods: &[PodFacts],
        values: &[(&str, i64)],
    ) -> Result<Proposal, String> {
        propose(
            current,
            target,
            true,
            pods,
            metrics(values),
            Tolerances::default(),
            t(0),
        )
    }

    #[test]
    fn ratio_times_ready_pods_rounded_up() {
        let pods = [pod("a", 100), pod("b", 100)];
        // 90% and 70% of requests against a 50% target: 160/100 = 1.6 → ceil(3.2).
        let p = run(2, Target::Utilization(50), &pods, &[("a", 90), ("b", 70)]).unwrap();
        assert_eq!(
            p,
            Proposal {
                replicas: 4,
                utilization: Some(80),
                average: 80
            }
        );
        // Within 10% of the target: no change.
        let p = run(2, Target::Utilization(50), &pods, &[("a", 54), ("b", 54)]).unwrap();
        assert_eq!(p.replicas, 2);
        // Idle: down to nothing (minReplicas bounds it later).
        let p = run(2, Target::Utilization(50), &pods, &[("a", 1), ("b", 0)]).unwrap();
        assert_eq!(p.replicas, 0);
        assert_eq!(p.utilization, Some(0));
    }

    #[test]
    fn average_value_targets() {
        let pods = [pod("a", 0), pod("b", 0)];
        // Memory: 300Mi average against 100Mi → 6 replicas.
        let mi = 1024 * 1024 * 1000;
        let p = run(
            2,
            Target::AverageValue(100 * mi),
            &pods,
            &[("a", 200 * mi), ("b", 400 * mi)],
        )
        .unwrap();
        assert_eq!((p.replicas, p.utilization, p.average), (6, None, 300 * mi));
    }

    #[test]
    fn missing_requests_are_an_error_for_utilization() {
        let mut pods = [pod("a", 100)];
        pods[0].request = Err("missing request for cpu in container app of Pod a".into());
        assert_eq!(
            run(1, Target::Utilization(50), &pods, &[("a", 90)]).unwrap_err(),
            "missing request for cpu in container app of Pod a"
        );
        assert_eq!(
            run(1, Target::Utilization(50), &[], &[]).unwrap_err(),
            "no pods returned by selector while calculating replica count"
        );
    }

    #[test]
    fn missing_pods_count_against_the_move() {
        let pods = [pod("a", 100), pod("b", 100), pod("c", 100)];
        // Scale-up: c has no metrics, counts as 0: (200+200+0)/300 = 133% of 100% → 4.
        let p = run(
            3,
            Target::Utilization(100),
            &pods,
            &[("a", 200), ("b", 200)],
        )
        .unwrap();
        assert_eq!(p.replicas, 4);
        // Scale-down: c counts as using 100% of its request: (10+10+100)/300 = 40% of 50% → ceil(0.8*3)=3.
        let p = run(3, Target::Utilization(50), &pods, &[("a", 10), ("b", 10)]).unwrap();
        assert_eq!(p.replicas, 3);
        // Scale-down that survives the missing pod.
        let p = run(3, Target::Utilization(200), &pods, &[("a", 10), ("b", 10)]).unwrap();
        // c counts as 200% of 100: (10+10+200)/300 = 73% of 200% → ceil(0.365*3) = 2.
        assert_eq!(p.replicas, 2);
    }

    #[test]
    fn pending_failed_deleting_and_starting_pods() {
        let mut pending = pod("p", 100);
        pending.phase = "Pending".into();
        let mut failed = pod("f", 100);
        failed.phase = "Failed".into();
        let mut deleting = pod("d", 100);
        deleting.deleting = true;
        // Ready 2 s ago: its sample (t-5) predates ready + window.
        let mut starting = pod("s", 100);
        starting.start_time = Some(t(-30));
        starting.ready = Some((true, t(-2)));
        let pods = [pod("a", 100), pending, failed, deleting, starting];
        let p = run(
            5,
            Target::Utilization(50),
            &pods,
            &[("a", 100), ("f", 100), ("d", 100), ("s", 500)],
        )
        .unwrap();
        // a: 200% of target; unready p and s count as 0 on the way up:
        // (100+0+0)/300 = 33% → below target, direction flips → no change.
        assert_eq!(p.replicas, 5);
        assert_eq!(p.utilization, Some(100));
        // With only the unready ones measured there is nothing to go on.
        let only = [pods[1].clone(), pods[4].clone()];
        assert_eq!(
            run(2, Target::Utilization(50), &only, &[("s", 500)]).unwrap_err(),
            "did not receive metrics for targeted pods (pods might be unready)"
        );
    }

    #[test]
    fn a_started_pod_counts_once_a_window_after_ready() {
        let mut starting = pod("s", 100);
        starting.start_time = Some(t(-60));
        starting.ready = Some((true, t(-30)));
        let p = run(1, Target::Utilization(50), &[starting], &[("s", 300)]).unwrap();
        assert_eq!(p.replicas, 6);
    }
}
