//! Printers for workloads: apps (Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ControllerRevision) and batch (Job, CronJob).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{
    NONE, age, arr, at, at_or_null, bool_ptr, condition, containers, deleting, format_labels,
    int_at, name, obj, opt_bool, opt_int, opt_str, selector_at, selector_string, since, str_at,
    time_at,
};
use super::{AGE, CONTAINERS, IMAGES, NAME, Table, human_duration, int, row, text};

/// Desired replicas; the API defaults a missing value to 1.
fn desired(v: &Value) -> i64 {
    opt_int(v, "/spec/replicas").unwrap_or(1)
}

/// The pod template's containers and images, for the wide columns.
fn template_containers(v: &Value, template_spec: &str) -> (Value, Value) {
    containers(at_or_null(v, template_spec))
}

pub(crate) const DEPLOYMENT: Table = Table {
    columns: &[
        NAME,
        text("Ready", "Number of the pod with ready state"),
        text("Up-to-date", ""),
        text("Available", ""),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: |d, now| {
        let (names, images) = template_containers(d, "/spec/template/spec");
        let selector =
            selector_string(at(d, "/spec/selector")).unwrap_or_else(|_| "<invalid>".to_string());
        row![
            name(d),
            format!("{}/{}", int_at(d, "/status/readyReplicas"), desired(d)),
            int_at(d, "/status/updatedReplicas"),
            int_at(d, "/status/availableReplicas"),
            age(d, now),
            names,
            images,
            selector,
        ]
    },
};

pub(crate) const REPLICA_SET: Table = Table {
    columns: &[
        NAME,
        int("Desired", ""),
        int("Current", ""),
        int(
            "Ready",
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: |rs, now| {
        let (names, images) = template_containers(rs, "/spec/template/spec");
        row![
            name(rs),
            desired(rs),
            int_at(rs, "/status/replicas"),
            int_at(rs, "/status/readyReplicas"),
            age(rs, now),
            names,
            images,
            selector_at(rs, "/spec/selector"),
        ]
    },
};

pub(crate) const STATEFUL_SET: Table = Table {
    columns: &[
        NAME,
        text("Ready", "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    cells: |ss, now| {
        let (names, images) = template_containers(ss, "/spec/template/spec");
        let ready = format!("{}/{}", int_at(ss, "/status/readyReplicas"), desired(ss));
        row![name(ss), ready, age(ss, now), names, images]
    },
};

pub(crate) const DAEMON_SET: Table = Table {
    columns: &[
        NAME,
        int("Desired", ""),
        int("Current", ""),
        int("Ready", ""),
        int("Up-to-date", ""),
        int("Available", ""),
        text("Node Selector", ""),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: |ds, now| {
        let (names, images) = template_containers(ds, "/spec/template/spec");
        row![
            name(ds),
            int_at(ds, "/status/desiredNumberScheduled"),
            int_at(ds, "/status/currentNumberScheduled"),
            int_at(ds, "/status/numberReady"),
            int_at(ds, "/status/updatedNumberScheduled"),
            int_at(ds, "/status/numberAvailable"),
            format_labels(obj(ds, "/spec/template/spec/nodeSelector")),
            age(ds, now),
            names,
            images,
            selector_at(ds, "/spec/selector"),
        ]
    },
};

pub(crate) const CONTROLLER_REVISION: Table = Table {
    columns: &[
        NAME,
        text("Controller", "Controller of the object"),
        text("Revision", ""),
        AGE,
    ],
    cells: |cr, now| {
        row![
            name(cr),
            controller_ref(cr),
            int_at(cr, "/revision"),
            age(cr, now)
        ]
    },
};

/// The managing owner as "kind.group/name" in lower case, or "<none>".
fn controller_ref(v: &Value) -> String {
    let owner = arr(v, "/metadata/ownerReferences")
        .iter()
        .find(|o| o.pointer("/controller") == Some(&Value::Bool(true)));
    let Some(owner) = owner else {
        return NONE.to_string();
    };
    let api_version = str_at(owner, "/apiVersion");
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    let kind = str_at(owner, "/kind");
    let owner_name = str_at(owner, "/name");
    match (kind, group) {
        ("", "") => owner_name.to_string(),
        (k, "") => format!("{}/{owner_name}", k.to_lowercase()),
        (k, g) => format!("{}/{owner_name}", format!("{k}.{g}").to_lowercase()),
    }
}

pub(crate) const JOB: Table = Table {
    columns: &[
        NAME,
        text("Status", "Status of the job."),
        text("Completions", ""),
        text("Duration", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: job_cells,
};

/// Whether the first job condition of `kind` is "True".
fn job_condition(job: &Value, kind: &str) -> bool {
    condition(job, "/status/conditions", kind).is_some_and(|c| str_at(c, "/status") == "True")
}

fn job_status(job: &Value) -> &'static str {
    if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if deleting(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match (
        opt_int(job, "/spec/completions"),
        int_at(job, "/spec/parallelism"),
    ) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, p) if p > 1 => format!("{succeeded}/1 of {p}"),
        (None, _) => format!("{succeeded}/1"),
    };
    let duration = match (
        time_at(job, "/status/startTime"),
        time_at(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(done)) => human_duration(done - start),
    };
    let (names, images) = template_containers(job, "/spec/template/spec");
    row![
        name(job),
        job_status(job),
        completions,
        duration,
        age(job, now),
        names,
        images,
        selector_at(job, "/spec/selector"),
    ]
}

pub(crate) const CRON_JOB: Table = Table {
    columns: &[
        NAME,
        text("Schedule", ""),
        text("Timezone", ""),
        super::col("Suspend", "boolean", ""),
        int("Active", "A list of pointers to currently running jobs."),
        text("Last Schedule", ""),
        AGE,
        CONTAINERS,
        IMAGES,
        text("Selector", "").wide(),
    ],
    cells: |cj, now| {
        let last = time_at(cj, "/status/lastScheduleTime")
            .map_or_else(|| NONE.to_string(), |t| since(Some(t), now));
        let (names, images) = template_containers(cj, "/spec/jobTemplate/spec/template/spec");
        row![
            name(cj),
            str_at(cj, "/spec/schedule"),
            opt_str(cj, "/spec/timeZone").unwrap_or(NONE),
            bool_ptr(opt_bool(cj, "/spec/suspend")),
            arr(cj, "/status/active").len() as i64,
            last,
            age(cj, now),
            names,
            images,
            selector_at(cj, "/spec/jobTemplate/spec/selector"),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::super::testutil::{ago, cells, names};
    use serde_json::json;

    #[test]
    fn deployment_ready_fraction_and_wide_columns() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(3 * 86400)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                        {"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            names("apps", "Deployment"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("apps", "Deployment", &d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("3d"),
                json!("nginx,side"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        let bare = cells("apps", "Deployment", &json!({"metadata": {"name": "x"}}));
        assert_eq!(bare[1], json!("0/1"));
        assert_eq!(bare[7], json!(""));
    }

    #[test]
    fn replica_set_stateful_set_and_daemon_set() {
        let rs = json!({"metadata": {"name": "web-abc"}, "spec": {"replicas": 2, "selector": {}},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        let row = cells("apps", "ReplicaSet", &rs);
        assert_eq!(row[1..4], [json!(2), json!(2), json!(1)]);
        assert_eq!(row[7], json!("<none>"));

        let ss = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cells("apps", "StatefulSet", &ss)[1], json!("3/3"));

        let ds = json!({"metadata": {"name": "agent"},
            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let row = cells("apps", "DaemonSet", &ds);
        assert_eq!(
            row[1..7],
            [
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux")
            ]
        );
        assert_eq!(cells("apps", "DaemonSet", &json!({}))[6], json!("<none>"));
    }

    #[test]
    fn controller_revision_names_its_owner() {
        let cr = json!({"metadata": {"name": "web-7d9f", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 4});
        assert_eq!(
            cells("apps", "ControllerRevision", &cr)[1..3],
            [json!("statefulset.apps/web"), json!(4)]
        );
        assert_eq!(
            cells("apps", "ControllerRevision", &json!({}))[1],
            json!("<none>")
        );
    }

    #[test]
    fn jobs_show_status_completions_and_duration() {
        let done = json!({
            "metadata": {"name": "pi", "creationTimestamp": ago(600)},
            "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": ago(590), "completionTime": ago(590 - 47),
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            cells("batch", "Job", &done),
            [
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("47s"),
                json!("10m"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=u1")
            ]
        );
        let running = json!({"spec": {"parallelism": 3}, "status": {"startTime": ago(300)}});
        let row = cells("batch", "Job", &running);
        assert_eq!(
            row[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("5m")]
        );
        let failed = json!({"status": {"conditions": [{"type": "Complete", "status": "False"},
                                                      {"type": "Failed", "status": "True"}]}});
        assert_eq!(
            cells("batch", "Job", &failed)[1..4],
            [json!("Failed"), json!("0/1"), json!("")]
        );
        let suspended =
            json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(cells("batch", "Job", &suspended)[1], json!("Suspended"));
        let deleting = json!({"metadata": {"deletionTimestamp": ago(1)}});
        assert_eq!(cells("batch", "Job", &deleting)[1], json!("Terminating"));
    }

    #[test]
    fn cron_jobs() {
        let cj = json!({
            "metadata": {"name": "nightly", "creationTimestamp": ago(86400 * 10)},
            "spec": {"schedule": "0 3 * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "img"}]}}}}},
            "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(9 * 3600)}
        });
        assert_eq!(
            names("batch", "CronJob"),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            cells("batch", "CronJob", &cj),
            [
                json!("nightly"),
                json!("0 3 * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("9h"),
                json!("10d"),
                json!("c"),
                json!("img"),
                json!("<none>")
            ]
        );
        let bare = cells(
            "batch",
            "CronJob",
            &json!({"spec": {"timeZone": "Etc/UTC"}}),
        );
        assert_eq!(
            bare[2..6],
            [
                json!("Etc/UTC"),
                json!("<unset>"),
                json!(0),
                json!("<none>")
            ]
        );
    }
}
