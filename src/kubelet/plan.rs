//! What one sync of a pod must do (upstream's `computePodActions`), decided
//! in pure code from the pod, what the runtime shows, the back-offs and the
//! clock. The pod worker carries the plan out over CRI; the decisions are
//! tested here without a runtime.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::status::{self, ContainerRun, RunState};
use crate::runtime::Backoff;

/// Back-off before restarting a failed container: 10 s doubling to 5 min.
pub const RESTART_BACKOFF_START: Duration = Duration::from_secs(10);
/// The longest restart back-off.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off forgotten.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// When to look again if nothing else wakes the worker (upstream's
/// `--sync-frequency`): the runtime relist wakes it when a container or
/// sandbox changes, a probe when its verdict does, and back-offs shorten it.
pub const RESYNC: Duration = Duration::from_secs(60);
/// When to look again after killing a container (to start its successor).
const AFTER_KILL: Duration = Duration::from_millis(100);

/// Per container name: its attempts in the ready sandbox, newest first,
/// each with the spec hash it was created from.
pub type Runs = HashMap<String, Vec<(ContainerRun, String)>>;

/// One of the pod's sandboxes as the runtime lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSeen {
    /// CRI sandbox id.
    pub id: String,
    /// Ready (running, network set up).
    pub ready: bool,
    /// Its attempt number.
    pub attempt: u32,
}

/// What to do about the pod's sandbox.
#[derive(Debug, Clone, PartialEq)]
pub enum SandboxStep {
    /// The pod has finished: its ready sandbox (if any) stops; containers
    /// stay for their logs.
    Finish {
        /// The ready sandbox, if any.
        stop: Option<String>,
    },
    /// Go on in this ready sandbox.
    Use(String),
    /// A creation failed lately: wait this long.
    Wait(Duration),
    /// Remove the old sandboxes (and their containers), then create
    /// attempt `attempt`.
    Create {
        /// The pod's sandboxes that are not ready.
        remove: Vec<String>,
        /// One past the newest attempt.
        attempt: u32,
    },
}

/// The sandbox step for a pod (`terminal`: Succeeded or Failed) with
/// `sandboxes` (newest first), `creation_backoff`: what is left of the
/// back-off after a failed creation.
pub fn sandbox_step(
    terminal: bool,
    sandboxes: &[SandboxSeen],
    creation_backoff: Option<Duration>,
) -> SandboxStep {
    let ready = sandboxes.iter().find(|s| s.ready);
    if terminal {
        return SandboxStep::Finish {
            stop: ready.map(|s| s.id.clone()),
        };
    }
    if let Some(s) = ready {
        return SandboxStep::Use(s.id.clone());
    }
    if let Some(left) = creation_backoff {
        return SandboxStep::Wait(left);
    }
    SandboxStep::Create {
        remove: sandboxes.iter().map(|s| s.id.clone()).collect(),
        attempt: sandboxes.iter().map(|s| s.attempt + 1).max().unwrap_or(0),
    }
}

/// Why a running container is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Its spec changed (the hash it was created from differs).
    SpecChanged,
    /// Its liveness probe failed.
    Unhealthy,
}

/// One step of a sync, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create and start the container, attempt `attempt` (its first, or a
    /// restart after an exit: `restart`).
    Start {
        /// The container's spec.
        container: Container,
        /// Its attempt number (its restart count).
        attempt: u32,
        /// For a restart: how it steps the back-off.
        restart: Option<Restart>,
    },
    /// The container exited and waits out its restart back-off.
    BackingOff {
        /// The container's name.
        container: String,
        /// Its current back-off.
        delay: Duration,
        /// What is left of it.
        left: Duration,
    },
    /// Stop the running container (its successor starts on the next sync).
    Kill {
        /// The container's spec (for its preStop hook).
        container: Container,
        /// Its CRI id.
        id: String,
        /// Why.
        reason: KillReason,
    },
    /// Keep probing the running container.
    Probe {
        /// The container's spec (its probes).
        container: Container,
        /// Its CRI id.
        id: String,
    },
    /// Stop probing an exited container.
    Unprobe {
        /// Its CRI id.
        id: String,
    },
    /// Remove an attempt older than the latest two.
    Remove {
        /// Its CRI id.
        id: String,
    },
}

/// How a restart steps the container's back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// The last attempt ran long enough that its back-off is forgotten first.
    pub reset_backoff: bool,
}

/// A sync's actions and when to look again at the latest.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// In order.
    pub actions: Vec<Action>,
    /// When to sync again if nothing wakes the worker sooner.
    pub next: Duration,
}

/// What the container plan is made from.
pub struct Inputs<'a> {
    /// The pod's spec.
    pub spec: &'a PodSpec,
    /// The containers in the ready sandbox.
    pub runs: &'a Runs,
    /// Restart back-offs by container name.
    pub restarts: &'a Backoff<String>,
    /// Whether the container with this CRI id failed its liveness probe.
    pub liveness_failed: &'a dyn Fn(&str) -> bool,
    /// Now, nanoseconds since the epoch (the runtime's clock).
    pub now_nanos: i64,
}

/// The containers' plan in a ready sandbox: init containers one at a time
/// in order; once all succeeded, the app containers (started, restarted
/// by restart policy and back-off, killed when changed or unhealthy) and
/// ephemeral containers (started once); then old attempts removed.
pub fn containers(inputs: &Inputs) -> Plan {
    let spec = inputs.spec;
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let mut plan = Plan {
        actions: Vec::new(),
        next: RESYNC,
    };
    let latest = |name: &str| inputs.runs.get(name).and_then(|r| r.first());
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        match latest(&c.name) {
            None => {
                plan.start(c, 0);
                initialized = false;
                break;
            }
            Some((r, _)) if r.state == RunState::Exited && r.exit_code == 0 => continue,
            Some((r, _)) if r.state == RunState::Exited => {
                initialized = false;
                if policy != "Never" {
                    plan.restart(c, r, inputs);
                }
                break;
            }
            Some(_) => {
                initialized = false;
                break;
            }
        }
    }
    if initialized {
        for c in &spec.containers {
            match latest(&c.name) {
                None => plan.start(c, 0),
                Some((r, hash)) if r.state == RunState::Running => {
                    let reason = if *hash != super::container::spec_hash(c) {
                        Some(KillReason::SpecChanged)
                    } else if (inputs.liveness_failed)(&r.id) {
                        Some(KillReason::Unhealthy)
                    } else {
                        None
                    };
                    match reason {
                        Some(reason) => {
                            plan.actions.push(Action::Kill {
                                container: c.clone(),
                                id: r.id.clone(),
                                reason,
                            });
                            plan.next = plan.next.min(AFTER_KILL);
                        }
                        None => plan.actions.push(Action::Probe {
                            container: c.clone(),
                            id: r.id.clone(),
                        }),
                    }
                }
                Some((r, _)) if matches!(r.state, RunState::Exited | RunState::Unknown) => {
                    plan.actions.push(Action::Unprobe { id: r.id.clone() });
                    let restart = match policy {
                        "Always" => true,
                        "OnFailure" => r.exit_code != 0,
                        _ => false,
                    };
                    if restart {
                        plan.restart(c, r, inputs);
                    }
                }
                Some(_) => {}
            }
        }
        for c in status::ephemeral_containers(spec) {
            if !inputs.runs.contains_key(&c.name) {
                plan.start(&c, 0);
            }
        }
    }
    // The latest two attempts stay: the current one and the one
    // `kubectl logs --previous` reads.
    for runs in inputs.runs.values() {
        for (old, _) in runs.iter().skip(2) {
            plan.actions.push(Action::Remove { id: old.id.clone() });
        }
    }
    plan
}

impl Plan {
    fn start(&mut self, c: &Container, attempt: u32) {
        self.actions.push(Action::Start {
            container: c.clone(),
            attempt,
            restart: None,
        });
    }

    /// An exited container: restarted unless its back-off has time left.
    fn restart(&mut self, c: &Container, last: &ContainerRun, inputs: &Inputs) {
        let ran = Duration::from_nanos((last.finished_at - last.started_at).max(0) as u64);
        let reset_backoff = ran >= BACKOFF_RESET;
        let since_exit = Duration::from_nanos((inputs.now_nanos - last.finished_at).max(0) as u64);
        let left = (!reset_backoff)
            .then(|| inputs.restarts.left_since(&c.name, since_exit))
            .flatten();
        match (left, inputs.restarts.delay(&c.name)) {
            (Some(left), Some(delay)) => {
                self.actions.push(Action::BackingOff {
                    container: c.name.clone(),
                    delay,
                    left,
                });
                self.next = self.next.min(left);
            }
            _ => self.actions.push(Action::Start {
                container: c.clone(),
                attempt: last.attempt + 1,
                restart: Some(Restart { reset_backoff }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    const SECOND: i64 = 1_000_000_000;
    const NOW: i64 = 1_000_000 * SECOND;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("spec")
    }

    fn app(restart_policy: &str) -> PodSpec {
        spec(json!({
            "restartPolicy": restart_policy,
            "containers": [{"name": "app", "image": "busybox"}],
        }))
    }

    fn run(id: &str, attempt: u32, state: RunState, exit_code: i32) -> ContainerRun {
        ContainerRun {
            id: id.into(),
            attempt,
            state,
            started_at: NOW - 20 * SECOND,
            finished_at: if state == RunState::Exited {
                NOW - 5 * SECOND
            } else {
                0
            },
            exit_code,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
        }
    }

    /// The runs of `spec`'s containers as the runtime would list them,
    /// hashes matching the spec.
    fn runs(spec: &PodSpec, list: &[(&str, ContainerRun)]) -> Runs {
        let mut runs = Runs::new();
        for (name, r) in list {
            let c = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == *name)
                .expect("container");
            runs.entry(name.to_string())
                .or_default()
                .push((r.clone(), super::super::container::spec_hash(c)));
        }
        runs
    }

    fn plan_with(spec: &PodSpec, runs: &Runs, restarts: &Backoff<String>, dead: &[&str]) -> Plan {
        let liveness_failed = |id: &str| dead.contains(&id);
        containers(&Inputs {
            spec,
            runs,
            restarts,
            liveness_failed: &liveness_failed,
            now_nanos: NOW,
        })
    }

    fn plan(spec: &PodSpec, runs: &Runs) -> Plan {
        plan_with(spec, runs, &restart_backoff(), &[])
    }

    fn restart_backoff() -> Backoff<String> {
        Backoff::new(RESTART_BACKOFF_START, RESTART_BACKOFF_MAX)
    }

    /// The plan's actions in short: `start app#0`, `restart app#1`, …
    fn steps(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Start {
                    container,
                    attempt,
                    restart: None,
                } => format!("start {}#{attempt}", container.name),
                Action::Start {
                    container,
                    attempt,
                    restart: Some(r),
                } => format!(
                    "restart {}#{attempt}{}",
                    container.name,
                    if r.reset_backoff { " (reset)" } else { "" }
                ),
                Action::BackingOff {
                    container, left, ..
                } => format!("back off {container} {}s", left.as_secs()),
                Action::Kill { id, reason, .. } => format!("kill {id} {reason:?}"),
                Action::Probe { id, .. } => format!("probe {id}"),
                Action::Unprobe { id } => format!("unprobe {id}"),
                Action::Remove { id } => format!("remove {id}"),
            })
            .collect()
    }

    #[test]
    fn a_new_pod_starts_its_containers() {
        let s = app("Always");
        let p = plan(&s, &Runs::new());
        assert_eq!(steps(&p), ["start app#0"]);
        assert_eq!(p.next, RESYNC);
    }

    #[test]
    fn restart_policy_decides_which_exits_restart() {
        for (policy, exit_code, restarts) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ] {
            let s = app(policy);
            let r = runs(&s, &[("app", run("c1", 0, RunState::Exited, exit_code))]);
            let expected: Vec<&str> = if restarts {
                vec!["unprobe c1", "restart app#1"]
            } else {
                vec!["unprobe c1"]
            };
            assert_eq!(steps(&plan(&s, &r)), expected, "{policy}, exit {exit_code}");
        }
    }

    #[test]
    fn a_restart_waits_out_the_back_off_counted_from_the_exit() {
        let s = app("Always");
        let r = runs(&s, &[("app", run("c2", 1, RunState::Exited, 1))]);
        let mut restarts = restart_backoff();
        // One restart recorded: 10 s from the exit 5 s ago.
        restarts.step(&"app".to_string(), Instant::now());
        let p = plan_with(&s, &r, &restarts, &[]);
        assert_eq!(steps(&p), ["unprobe c2", "back off app 5s"]);
        assert_eq!(p.next, Duration::from_secs(5));
        // Doubled to 20 s, still 15 s to go.
        restarts.step(&"app".to_string(), Instant::now());
        assert_eq!(
            steps(&plan_with(&s, &r, &restarts, &[])),
            ["unprobe c2", "back off app 15s"]
        );
    }

    #[test]
    fn a_back_off_that_ran_out_restarts_and_a_long_run_forgets_it() {
        let s = app("Always");
        let mut restarts = restart_backoff();
        restarts.step(&"app".to_string(), Instant::now());
        // Exited 30 s ago: the 10 s are over.
        let mut exited = run("c2", 1, RunState::Exited, 1);
        exited.finished_at = NOW - 30 * SECOND;
        let r = runs(&s, &[("app", exited.clone())]);
        assert_eq!(
            steps(&plan_with(&s, &r, &restarts, &[])),
            ["unprobe c2", "restart app#2"]
        );
        // Exited 5 s ago after running 10 minutes: no waiting, back-off reset.
        exited.finished_at = NOW - 5 * SECOND;
        exited.started_at = exited.finished_at - 600 * SECOND;
        let r = runs(&s, &[("app", exited)]);
        assert_eq!(
            steps(&plan_with(&s, &r, &restarts, &[])),
            ["unprobe c2", "restart app#2 (reset)"]
        );
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_app() {
        let s = spec(json!({
            "initContainers": [{"name": "one", "image": "busybox"}, {"name": "two", "image": "busybox"}],
            "containers": [{"name": "app", "image": "busybox"}],
        }));
        assert_eq!(steps(&plan(&s, &Runs::new())), ["start one#0"]);
        let running = runs(&s, &[("one", run("i1", 0, RunState::Running, 0))]);
        assert!(steps(&plan(&s, &running)).is_empty(), "waits for the first");
        let first_done = runs(&s, &[("one", run("i1", 0, RunState::Exited, 0))]);
        assert_eq!(steps(&plan(&s, &first_done)), ["start two#0"]);
        let all_done = runs(
            &s,
            &[
                ("one", run("i1", 0, RunState::Exited, 0)),
                ("two", run("i2", 0, RunState::Exited, 0)),
            ],
        );
        assert_eq!(steps(&plan(&s, &all_done)), ["start app#0"]);
    }

    #[test]
    fn a_failed_init_container_restarts_unless_the_policy_is_never() {
        for (policy, expected) in [
            ("Always", vec!["restart one#1"]),
            ("OnFailure", vec!["restart one#1"]),
            ("Never", vec![]),
        ] {
            let mut s = spec(json!({
                "initContainers": [{"name": "one", "image": "busybox"}],
                "containers": [{"name": "app", "image": "busybox"}],
            }));
            s.restart_policy = Some(policy.into());
            let r = runs(&s, &[("one", run("i1", 0, RunState::Exited, 2))]);
            assert_eq!(steps(&plan(&s, &r)), expected, "{policy}");
        }
    }

    #[test]
    fn a_running_container_is_probed_and_killed_when_its_liveness_fails() {
        let s = app("Always");
        let r = runs(&s, &[("app", run("c1", 0, RunState::Running, 0))]);
        let p = plan(&s, &r);
        assert_eq!(steps(&p), ["probe c1"]);
        assert_eq!(p.next, RESYNC);
        let p = plan_with(&s, &r, &restart_backoff(), &["c1"]);
        assert_eq!(steps(&p), ["kill c1 Unhealthy"]);
        assert_eq!(p.next, AFTER_KILL);
    }

    #[test]
    fn a_changed_container_is_killed_to_be_made_again() {
        let s = app("Always");
        let mut r = runs(&s, &[("app", run("c1", 0, RunState::Running, 0))]);
        r.get_mut("app").expect("app")[0].1 = "an older spec".into();
        assert_eq!(steps(&plan(&s, &r)), ["kill c1 SpecChanged"]);
    }

    #[test]
    fn ephemeral_containers_start_once_and_old_attempts_go() {
        let s = spec(json!({
            "containers": [{"name": "app", "image": "busybox"}],
            "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
        }));
        let mut r = runs(
            &s,
            &[
                ("app", run("c3", 2, RunState::Running, 0)),
                ("app", run("c2", 1, RunState::Exited, 1)),
                ("app", run("c1", 0, RunState::Exited, 1)),
            ],
        );
        assert_eq!(
            steps(&plan(&s, &r)),
            ["probe c3", "start debugger#0", "remove c1"]
        );
        r.insert(
            "debugger".into(),
            vec![(run("e1", 0, RunState::Exited, 0), String::new())],
        );
        assert_eq!(steps(&plan(&s, &r)), ["probe c3", "remove c1"]);
    }

    #[test]
    fn the_sandbox_is_used_made_again_or_stopped() {
        let seen = |id: &str, ready, attempt| SandboxSeen {
            id: id.into(),
            ready,
            attempt,
        };
        assert_eq!(
            sandbox_step(false, &[], None),
            SandboxStep::Create {
                remove: vec![],
                attempt: 0
            }
        );
        let dead = [seen("s2", false, 1), seen("s1", false, 0)];
        assert_eq!(
            sandbox_step(false, &dead, None),
            SandboxStep::Create {
                remove: vec!["s2".into(), "s1".into()],
                attempt: 2
            }
        );
        assert_eq!(
            sandbox_step(false, &dead, Some(Duration::from_secs(4))),
            SandboxStep::Wait(Duration::from_secs(4))
        );
        let ready = [seen("s3", true, 2), seen("s2", false, 1)];
        assert_eq!(
            sandbox_step(false, &ready, None),
            SandboxStep::Use("s3".into())
        );
        assert_eq!(
            sandbox_step(true, &ready, None),
            SandboxStep::Finish {
                stop: Some("s3".into())
            }
        );
    }
}
