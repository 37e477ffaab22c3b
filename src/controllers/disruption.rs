//! The disruption controller (as `disruption-controller`): keeps each
//! PodDisruptionBudget's status true — the pods it expects, how many are
//! healthy, how many must be, and so how many disruptions are allowed —
//! which the eviction subresource spends (and records in `disruptedPods`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::Context;

const RESYNC: Duration = Duration::from_secs(30);

/// How long a pod an eviction took stays out of the healthy count while
/// its deletion is under way (upstream's DeletionTimeout).
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_mins(2);

/// What the budget arithmetic needs to know of one matched pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Ready condition True.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
}

/// A budget's status from the pods its selector matches (`pods`), the
/// scale of their controllers (`scale`: None when unknown) and the status
/// it had (its `disruptedPods` are kept while their deletion runs).
pub fn status(
    budget: &PodDisruptionBudget,
    pods: &[PodView],
    scale: Option<i32>,
    previous: Option<&PodDisruptionBudgetStatus>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let spec = budget.spec.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), _) => (pods.len() as i32, *min),
        (Some(IntOrString::String(percent)), _) => {
            let expected = scale.unwrap_or(pods.len() as i32);
            (expected, scaled(percent, expected))
        }
        (None, Some(max)) => {
            let expected = scale.unwrap_or(pods.len() as i32);
            let max = match max {
                IntOrString::Int(n) => *n,
                IntOrString::String(percent) => scaled(percent, expected),
            };
            (expected, (expected - max).max(0))
        }
        (None, None) => (pods.len() as i32, 0),
    };
    let existing: HashMap<&str, &PodView> = pods.iter().map(|p| (p.name.as_str(), p)).collect();
    let disrupted: BTreeMap<String, Time> = previous
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| {
            existing.get(name.as_str()).is_some_and(|p| !p.terminating)
                && at.0 + DELETION_TIMEOUT > now
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| p.ready && !p.terminating && !disrupted.contains_key(&p.name))
        .count() as i32;
    let allowed = (healthy - desired).max(0);
    let (condition_status, reason) = match allowed > 0 {
        true => ("True", "SufficientPods"),
        false => ("False", "InsufficientPods"),
    };
    let kept = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == condition_status && c.reason == reason);
    let condition = match kept {
        Some(same) => same.clone(),
        None => Condition {
            type_: "DisruptionAllowed".into(),
            status: condition_status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(now),
            observed_generation: budget.metadata.generation,
        },
    };
    PodDisruptionBudgetStatus {
        observed_generation: budget.metadata.generation,
        expected_pods: expected,
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(vec![Condition {
            observed_generation: budget.metadata.generation,
            ..condition
        }]),
    }
}

/// `percent`% of `total`, rounded up (upstream's GetScaledValueFromIntOrPercent).
fn scaled(percent: &str, total: i32) -> i32 {
    let value: i64 = percent.trim_end_matches('%').parse().unwrap_or(0);
    ((value * i64::from(total) + 99) / 100) as i32
}

/// Runs until the process ends.
pub async fn run(context: Arc<Context>) {
    let client = context.client.clone();
    let informers = &context.informers;
    let (budgets, budget_changes) = informers.cache::<PodDisruptionBudget>();
    let (pods, pod_changes) = informers.cache::<Pod>();
    let (replica_sets, rs_changes) = informers.cache::<ReplicaSet>();
    let (deployments, deployment_changes) = informers.cache::<Deployment>();
    let (stateful_sets, sts_changes) = informers.cache::<StatefulSet>();
    let (controllers, rc_changes) = informers.cache::<ReplicationController>();
    let scales = Scales {
        replica_sets,
        deployments,
        stateful_sets,
        controllers,
    };
    let changes = futures::stream::select_all([
        budget_changes,
        pod_changes,
        rs_changes,
        deployment_changes,
        sts_changes,
        rc_changes,
    ])
    .boxed();
    let mut passes = crate::runtime::passes(changes, RESYNC, Duration::from_millis(50));
    while passes.next().await.is_some() {
        let all_pods = pods.state();
        for budget in budgets.state() {
            if let Err(e) = sync(&client, &budget, &all_pods, &scales).await {
                tracing::debug!(err = %e, budget = %budget.name_any(), "syncing a disruption budget");
            }
        }
    }
}

/// The caches the expected scale is read from.
struct Scales {
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    controllers: Store<ReplicationController>,
}

impl Scales {
    /// The summed replicas of the controllers of `pods` (a Deployment's
    /// for its ReplicaSets' pods), each counted once; None when a pod has
    /// no controller kelp can scale.
    fn of(&self, pods: &[Arc<Pod>]) -> Option<i32> {
        let mut seen = HashMap::new();
        for pod in pods {
            let owner = crate::api::values::pods::controller_of(&pod.metadata)?;
            let namespace = pod.namespace().unwrap_or_default();
            let (uid, replicas) = match owner.kind.as_str() {
                "ReplicaSet" => {
                    let rs = owned(&self.replica_sets, &namespace, owner)?;
                    match crate::api::values::pods::controller_of(&rs.metadata) {
                        Some(d) if d.kind == "Deployment" => {
                            let deployment = owned(&self.deployments, &namespace, d)?;
                            (
                                d.uid.clone(),
                                deployment.spec.as_ref()?.replicas.unwrap_or(1),
                            )
                        }
                        _ => (owner.uid.clone(), rs.spec.as_ref()?.replicas.unwrap_or(1)),
                    }
                }
                "StatefulSet" => {
                    let set = owned(&self.stateful_sets, &namespace, owner)?;
                    (owner.uid.clone(), set.spec.as_ref()?.replicas.unwrap_or(1))
                }
                "ReplicationController" => {
                    let rc = owned(&self.controllers, &namespace, owner)?;
                    (owner.uid.clone(), rc.spec.as_ref()?.replicas.unwrap_or(1))
                }
                _ => return None,
            };
            seen.insert(uid, replicas);
        }
        Some(seen.values().sum())
    }
}

/// The object `owner` names in `namespace`, from the cache, if it is still
/// the same one (its uid).
fn owned<K>(
    store: &Store<K>,
    namespace: &str,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Option<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let object =
        store.get(&kube::runtime::reflector::ObjectRef::new(&owner.name).within(namespace))?;
    (object.meta().uid.as_deref() == Some(owner.uid.as_str())).then_some(object)
}

async fn sync(
    client: &kube::Client,
    budget: &PodDisruptionBudget,
    all_pods: &[Arc<Pod>],
    scales: &Scales,
) -> Result<(), super::Error> {
    let namespace = budget.namespace().unwrap_or_default();
    let selector = budget.spec.as_ref().and_then(|s| s.selector.clone());
    let matched: Vec<Arc<Pod>> = match &selector {
        // A null selector matches nothing; an empty one every pod (policy/v1).
        None => vec![],
        Some(selector) => {
            let selector = crate::api::values::selectors::LabelSelector::from_object(
                &serde_json::to_value(selector).unwrap_or_default(),
            );
            all_pods
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|p| {
                    let labels = serde_json::to_value(&p.metadata.labels).unwrap_or_default();
                    selector.matches(Some(&labels))
                })
                .cloned()
                .collect()
        }
    };
    let views: Vec<PodView> = matched.iter().map(|p| view(p)).collect();
    let status = status(
        budget,
        &views,
        scales.of(&matched),
        budget.status.as_ref(),
        Timestamp::now(),
    );
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    super::write_status(&api, budget, &budget.status, &Some(status)).await
}

fn view(pod: &Pod) -> PodView {
    PodView {
        name: pod.name_any(),
        ready: pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;

    fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pods(ready: usize, unready: usize) -> Vec<PodView> {
        (0..ready + unready)
            .map(|i| PodView {
                name: format!("p{i}"),
                ready: i < ready,
                terminating: false,
            })
            .collect()
    }

    #[test]
    fn min_available_counts_healthy_pods() {
        let now = Timestamp::now();
        let s = status(
            &budget(Some(IntOrString::Int(2)), None),
            &pods(3, 1),
            None,
            None,
            now,
        );
        assert_eq!(
            (
                s.expected_pods,
                s.current_healthy,
                s.desired_healthy,
                s.disruptions_allowed
            ),
            (4, 3, 2, 1)
        );
        assert_eq!(s.observed_generation, Some(2));
        let condition = &s.conditions.as_ref().expect("conditions")[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "SufficientPods")
        );
        let none = status(
            &budget(Some(IntOrString::Int(3)), None),
            &pods(3, 0),
            None,
            None,
            now,
        );
        assert_eq!(none.disruptions_allowed, 0);
        assert_eq!(
            none.conditions.expect("conditions")[0].reason,
            "InsufficientPods"
        );
    }

    #[test]
    fn percentages_and_max_unavailable_use_the_controllers_scale() {
        let now = Timestamp::now();
        // 50% of 5 expected, rounded up: 3 must stay.
        let s = status(
            &budget(Some(IntOrString::String("50%".into())), None),
            &pods(4, 0),
            Some(5),
            None,
            now,
        );
        assert_eq!(
            (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
            (5, 3, 1)
        );
        let s = status(
            &budget(None, Some(IntOrString::Int(1))),
            &pods(3, 0),
            Some(3),
            None,
            now,
        );
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (2, 1));
        let s = status(
            &budget(None, Some(IntOrString::String("34%".into()))),
            &pods(3, 0),
            Some(3),
            None,
            now,
        );
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (1, 2));
    }

    #[test]
    fn pods_being_evicted_are_not_healthy_until_their_deletion_times_out() {
        let now = Timestamp::now();
        let b = budget(Some(IntOrString::Int(1)), None);
        let previous = PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("p0".to_string(), Time(now - SignedDuration::from_secs(10))),
                ("p1".to_string(), Time(now - SignedDuration::from_mins(5))),
                ("gone".to_string(), Time(now)),
            ])),
            ..Default::default()
        };
        let s = status(&b, &pods(3, 0), None, Some(&previous), now);
        // p0 is on its way out; p1's entry expired; "gone" no longer exists.
        assert_eq!(s.current_healthy, 2);
        assert_eq!(
            s.disrupted_pods.expect("kept").keys().collect::<Vec<_>>(),
            vec!["p0"]
        );
    }
}
