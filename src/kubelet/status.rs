//! Pod status from what the runtime reports: phase, conditions and container
//! statuses computed as upstream's kubelet does. Pure functions over plain
//! views of CRI state, so they are tested without a runtime.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::api::values::conditions;

/// State of one CRI container (one attempt of a pod container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// One attempt of a container, as CRI reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRun {
    /// CRI container id.
    pub id: String,
    /// Attempt number (= restart count when it was created).
    pub attempt: u32,
    /// State.
    pub state: RunState,
    /// Nanoseconds since the epoch (0 = never).
    pub started_at: i64,
    /// Nanoseconds since the epoch (0 = not finished).
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Runtime's reason (Completed, Error, OOMKilled).
    pub reason: String,
    /// Runtime's message or the termination message.
    pub message: String,
    /// Image reference the runtime resolved (digest).
    pub image_ref: String,
}

/// What the kubelet knows about one container of the pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    /// Attempts, newest first (the kubelet keeps the latest two).
    pub runs: Vec<ContainerRun>,
    /// Why the container is not running, when it is waiting.
    pub waiting: Option<(String, String)>,
    /// Readiness probe verdict (true without a probe once running).
    pub ready: bool,
    /// Startup probe passed (true without a probe once running).
    pub started: bool,
}

/// The sandbox's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxView {
    /// Sandbox ready (network set up).
    pub ready: bool,
    /// Pod IP.
    pub ip: Option<String>,
}

/// Everything the status is computed from.
pub struct Observed<'a> {
    /// The pod as the API has it.
    pub pod: &'a Pod,
    /// Sandbox, when there is one.
    pub sandbox: Option<SandboxView>,
    /// Per container name (init and app containers).
    pub containers: &'a HashMap<String, ContainerView>,
    /// The node's address.
    pub host_ip: &'a str,
    /// Now, RFC 3339.
    pub now: &'a str,
}

fn time(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    let secs = nanos / 1_000_000_000;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

fn run_state(run: &ContainerRun) -> Value {
    match run.state {
        RunState::Running => json!({"running": {"startedAt": time(run.started_at)}}),
        RunState::Exited | RunState::Unknown => {
            let mut t = json!({
                "exitCode": run.exit_code,
                "reason": if run.reason.is_empty() { if run.exit_code == 0 { "Completed" } else { "Error" } } else { run.reason.as_str() },
                "startedAt": time(run.started_at),
                "finishedAt": time(run.finished_at),
                "containerID": container_id(&run.id),
            });
            if !run.message.is_empty() {
                t["message"] = json!(run.message);
            }
            json!({"terminated": t})
        }
        RunState::Created => json!({"waiting": {"reason": "ContainerCreating"}}),
    }
}

/// The status of one container.
fn container_status(c: &Container, view: Option<&ContainerView>, default_waiting: &str) -> Value {
    let empty = ContainerView::default();
    let view = view.unwrap_or(&empty);
    let latest = view.runs.first();
    let mut status = json!({
        "name": c.name,
        "image": c.image.clone().unwrap_or_default(),
        "imageID": latest.map(|r| r.image_ref.clone()).unwrap_or_default(),
        "ready": false,
        "restartCount": latest.map_or(0, |r| r.attempt),
        "started": false,
        "lastState": {},
    });
    let state = match (&view.waiting, latest) {
        (Some((reason, message)), _) => {
            let mut w = json!({"reason": reason});
            if !message.is_empty() {
                w["message"] = json!(message);
            }
            json!({"waiting": w})
        }
        (None, Some(run)) => run_state(run),
        (None, None) => json!({"waiting": {"reason": default_waiting}}),
    };
    // lastState: the previous attempt, or the latest one when a new one is
    // pending (waiting to restart).
    let last = if view.waiting.is_some() {
        latest.filter(|r| r.state == RunState::Exited)
    } else {
        view.runs.get(1)
    };
    if let Some(last) = last {
        status["lastState"] = run_state(last);
    }
    if let Some(run) = latest
        && (run.state != RunState::Created || view.waiting.is_none())
    {
        status["containerID"] = json!(container_id(&run.id));
    }
    let running = state.get("running").is_some();
    status["ready"] = json!(running && view.ready);
    status["started"] = json!(running && view.started);
    status["state"] = state;
    status
}

fn is_running(s: &Value) -> bool {
    s["state"].get("running").is_some()
}

fn terminated_exit(s: &Value) -> Option<i64> {
    s["state"]["terminated"]["exitCode"].as_i64()
}

/// The pod's ephemeral containers (`kubectl debug`) as the containers the
/// kubelet runs (they share every field they have; the target container's
/// process namespace is not joined).
pub fn ephemeral_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| {
            let mut value = serde_json::to_value(e).ok()?;
            value.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(value).ok()
        })
        .collect()
}

/// Whether a computed status says nothing new: equal to the API's apart
/// from fields the API fills in (null condition fields).
pub fn unchanged(computed: &Value, current: &Value) -> bool {
    fn normal(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(cs) = v["conditions"].as_array_mut() {
            for c in cs.iter_mut() {
                if let Some(o) = c.as_object_mut() {
                    o.retain(|_, x| !x.is_null());
                }
            }
        }
        v
    }
    normal(computed) == normal(current)
}

/// The pod's `.status`, given what it was.
pub fn pod_status(o: &Observed) -> Value {
    let spec = o.pod.spec.clone().unwrap_or_default();
    let previous = o
        .pod
        .status
        .as_ref()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init_containers = spec.init_containers.clone().unwrap_or_default();
    let init: Vec<Value> = init_containers
        .iter()
        .map(|c| container_status(c, o.containers.get(&c.name), "PodInitializing"))
        .collect();
    // Init containers: all must exit 0 before app containers start.
    let mut pending_init = Vec::new();
    let mut init_failed = false;
    for s in &init {
        match terminated_exit(s) {
            Some(0) => {}
            Some(_) => {
                if restart_policy == "Never" {
                    init_failed = true;
                }
                pending_init.push(s["name"].as_str().unwrap_or_default().to_string());
            }
            None => {
                let last_failed = s["lastState"]["terminated"]["exitCode"]
                    .as_i64()
                    .is_some_and(|c| c != 0);
                if last_failed && restart_policy == "Never" {
                    init_failed = true;
                }
                pending_init.push(s["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    let initialized = pending_init.is_empty();
    let app_default = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let app: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| container_status(c, o.containers.get(&c.name), app_default))
        .collect();
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &app {
        if is_running(s) {
            running += 1;
        } else if let Some(code) = terminated_exit(s) {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
            if s["lastState"]["terminated"]["exitCode"] == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    let phase = if init_failed {
        "Failed"
    } else if !initialized || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    };
    // A finished pod stays finished.
    let phase = match previous["phase"].as_str() {
        Some(p @ ("Succeeded" | "Failed")) => p,
        _ => phase,
    };
    let unready: Vec<&str> = app
        .iter()
        .filter(|s| s["ready"] != true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": o.now});
        let before = previous["conditions"].as_array();
        conditions::carry_transition(before.map_or(&[][..], Vec::as_slice), &mut c);
        if !ok && !reason.is_empty() {
            c["reason"] = json!(reason);
            if !message.is_empty() {
                c["message"] = json!(message);
            }
        }
        c
    };
    let finished = matches!(phase, "Succeeded" | "Failed");
    let (unready_reason, unready_message) = if finished {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let sandbox_ready = o.sandbox.as_ref().is_some_and(|s| s.ready) && !finished;
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox_ready,
            "",
            String::new(),
        ),
        condition(
            "Initialized",
            initialized,
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                pending_init.join(" ")
            ),
        ),
        condition(
            "Ready",
            unready.is_empty() && !finished,
            unready_reason,
            unready_message.clone(),
        ),
        condition(
            "ContainersReady",
            unready.is_empty() && !finished,
            unready_reason,
            unready_message,
        ),
    ];
    if finished && initialized {
        // Upstream reports the completed reason on Initialized as well.
        conditions[1] = condition("Initialized", true, "PodCompleted", String::new());
    }
    let scheduled = previous["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .unwrap_or_else(|| condition("PodScheduled", true, "", String::new()));
    conditions.push(scheduled);
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": o.host_ip,
        "hostIPs": [{"ip": o.host_ip}],
        "startTime": previous["startTime"].as_str().unwrap_or(o.now),
        "containerStatuses": app,
        "qosClass": previous["qosClass"].clone(),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    let ephemeral: Vec<Value> = ephemeral_containers(&spec)
        .iter()
        .map(|c| container_status(c, o.containers.get(&c.name), "ContainerCreating"))
        .collect();
    if !ephemeral.is_empty() {
        status["ephemeralContainerStatuses"] = json!(ephemeral);
    }
    // Host-network pods have the node's address.
    let ip = if spec.host_network == Some(true) {
        Some(o.host_ip.to_string())
    } else {
        o.sandbox
            .as_ref()
            .and_then(|s| s.ip.clone())
            .or_else(|| previous["podIP"].as_str().map(String::from))
    };
    if let Some(ip) = ip.filter(|ip| !ip.is_empty()) {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if status["qosClass"].is_null()
        && let Some(obj) = status.as_object_mut()
    {
        obj.remove("qosClass");
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, init: bool) -> Pod {
        let mut spec =
            json!({"restartPolicy": policy, "containers": [{"name": "a", "image": "img"}]});
        if init {
            spec["initContainers"] = json!([{"name": "i", "image": "img"}]);
        }
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": spec, "status": {"qosClass": "BestEffort"}}),
        )
        .unwrap()
    }

    fn run(attempt: u32, state: RunState, exit: i32) -> ContainerRun {
        ContainerRun {
            id: format!("c{attempt}"),
            attempt,
            state,
            started_at: 1_700_000_000_000_000_000,
            finished_at: if state == RunState::Exited {
                1_700_000_001_000_000_000
            } else {
                0
            },
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            image_ref: "sha256:abc".into(),
        }
    }

    fn status_of(pod: &Pod, views: &[(&str, ContainerView)]) -> Value {
        let containers: HashMap<String, ContainerView> = views
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        pod_status(&Observed {
            pod,
            sandbox: Some(SandboxView {
                ready: true,
                ip: Some("10.42.0.5".into()),
            }),
            containers: &containers,
            host_ip: "192.0.2.1",
            now: "2026-01-01T00:00:00Z",
        })
    }

    fn condition(s: &Value, kind: &str) -> Value {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()
            .clone()
    }

    #[test]
    fn a_running_ready_container_makes_a_running_ready_pod() {
        let p = pod("Always", false);
        let view = ContainerView {
            runs: vec![run(0, RunState::Running, 0)],
            waiting: None,
            ready: true,
            started: true,
        };
        let s = status_of(&p, &[("a", view)]);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.5");
        assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://c0");
        assert_eq!(
            s["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(condition(&s, "Ready")["status"], "True");
        assert_eq!(condition(&s, "PodScheduled")["status"], "True");
        assert_eq!(s["qosClass"], "BestEffort");
    }

    #[test]
    fn a_crash_looping_container_keeps_the_pod_running_with_its_last_state() {
        let p = pod("Always", false);
        let view = ContainerView {
            runs: vec![run(3, RunState::Exited, 1)],
            waiting: Some((
                "CrashLoopBackOff".into(),
                "back-off 40s restarting failed container".into(),
            )),
            ready: false,
            started: false,
        };
        let s = status_of(&p, &[("a", view)]);
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(c["restartCount"], 3);
        assert_eq!(condition(&s, "Ready")["reason"], "ContainersNotReady");
        assert_eq!(
            condition(&s, "Ready")["message"],
            "containers with unready status: [a]"
        );
    }

    #[test]
    fn restart_policy_decides_the_phase_of_finished_containers() {
        let exited = |code| ContainerView {
            runs: vec![run(0, RunState::Exited, code)],
            ..Default::default()
        };
        assert_eq!(
            status_of(&pod("Never", false), &[("a", exited(0))])["phase"],
            "Succeeded"
        );
        assert_eq!(
            status_of(&pod("Never", false), &[("a", exited(2))])["phase"],
            "Failed"
        );
        assert_eq!(
            status_of(&pod("OnFailure", false), &[("a", exited(0))])["phase"],
            "Succeeded"
        );
        assert_eq!(
            status_of(&pod("OnFailure", false), &[("a", exited(2))])["phase"],
            "Running"
        );
        let done = status_of(&pod("Never", false), &[("a", exited(0))]);
        assert_eq!(condition(&done, "Ready")["reason"], "PodCompleted");
    }

    #[test]
    fn init_containers_hold_the_pod_pending() {
        let p = pod("Always", true);
        let s = status_of(
            &p,
            &[(
                "i",
                ContainerView {
                    runs: vec![run(0, RunState::Running, 0)],
                    ..Default::default()
                },
            )],
        );
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        assert_eq!(
            condition(&s, "Initialized")["message"],
            "containers with incomplete status: [i]"
        );
        let s = status_of(
            &p,
            &[(
                "i",
                ContainerView {
                    runs: vec![run(0, RunState::Exited, 0)],
                    ..Default::default()
                },
            )],
        );
        assert_eq!(condition(&s, "Initialized")["status"], "True");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        let never = pod("Never", true);
        let s = status_of(
            &never,
            &[(
                "i",
                ContainerView {
                    runs: vec![run(0, RunState::Exited, 1)],
                    ..Default::default()
                },
            )],
        );
        assert_eq!(s["phase"], "Failed");
    }
}
