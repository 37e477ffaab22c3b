//! Server-side printing: the `meta.k8s.io/v1` Table columns and row cells that
//! `kubectl get` asks for, computed from objects held as `serde_json::Value`.
//!
//! Built-in kinds follow kube-apiserver's printers (always in wide mode, as the
//! server generates every column and lets the client hide priority > 0 ones);
//! unknown kinds get the default Name / Created At table; custom resources get
//! the columns of their CRD version's `additionalPrinterColumns`.

mod apps;
mod cluster;
mod core_group;
mod custom;
mod events;
mod helpers;
mod jsonpath;
mod storage;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use custom::custom_printer;

/// One column definition as in meta.k8s.io/v1 TableColumnDefinition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnDefinition {
    /// Human-readable column name, e.g. "Name" or "Restarts".
    pub name: String,
    /// OpenAPI type of the cells: "string", "integer", "number", "boolean" or "date".
    #[serde(rename = "type")]
    pub type_: String,
    /// OpenAPI format hint, e.g. "name" for the object-name column.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0 for default columns; higher ones show only with `-o wide`.
    pub priority: i32,
}

/// A kind's columns and how to compute a row's cells.
pub trait Printer: Send + Sync {
    /// The column definitions, in cell order.
    fn columns(&self) -> Vec<ColumnDefinition>;
    /// One row's cells for `obj`, one per column; ages are measured against `now`.
    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value>;
}

/// The printer for a built-in kind; the default Name/Created At printer for unknown ones.
pub fn printer_for(group: &str, kind: &str) -> Box<dyn Printer> {
    let found = BUILTIN
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
        .map(|(_, _, table)| *table);
    Box::new(found.unwrap_or(DEFAULT_TABLE))
}

/// Upstream's row conditions (meta.k8s.io/v1 TableRowCondition) for a row of
/// `obj`: a Succeeded or Failed pod carries a `Completed` condition; every other
/// row carries none.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    match (group, kind) {
        ("", "Pod") => core_group::pod_row_conditions(obj),
        _ => Vec::new(),
    }
}

/// Puts a list's rows (each `{"cells": [...]}`) in the order upstream's
/// list printer does: FlowSchemas by matching precedence, then name; other
/// kinds keep the store's (name) order.
pub fn order_rows(group: &str, kind: &str, rows: &mut [Value]) {
    if (group, kind) == ("flowcontrol.apiserver.k8s.io", "FlowSchema") {
        rows.sort_by(|a, b| {
            let key = |row: &Value| {
                (
                    row["cells"][2].as_i64().unwrap_or(0),
                    row["cells"][0].as_str().unwrap_or("").to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
    }
}

/// Upstream's human age ("5m", "3h12m", "2d", "4y") for a duration.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_remainder(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// "3h" or "3h12m": the remainder is left out when it is zero.
fn with_remainder(whole: i64, unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{whole}{unit}")
    } else {
        format!("{whole}{unit}{rest}{rest_unit}")
    }
}

/// A column definition held as static data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    desc: &'static str,
    priority: i32,
}

/// A column of type `ty` with the given description (empty: a generic one
/// naming the column), shown by default.
pub(crate) const fn col(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 0,
    }
}

/// A string column shown by default.
pub(crate) const fn text(name: &'static str, desc: &'static str) -> Col {
    col(name, "string", desc)
}

/// An integer column shown by default.
pub(crate) const fn int(name: &'static str, desc: &'static str) -> Col {
    col(name, "integer", desc)
}

impl Col {
    /// The same column, shown only with `-o wide` (priority 1).
    pub(crate) const fn wide(self) -> Col {
        Col {
            priority: 1,
            ..self
        }
    }

    /// The same column with an OpenAPI format hint.
    pub(crate) const fn format(self, format: &'static str) -> Col {
        Col { format, ..self }
    }

    fn definition(&self) -> ColumnDefinition {
        ColumnDefinition {
            name: self.name.to_string(),
            type_: self.ty.to_string(),
            format: self.format.to_string(),
            description: if self.desc.is_empty() {
                // One wording for every column without a description of its own.
                format!(
                    "{} of the object, as kubectl shows it (upstream column)",
                    self.name
                )
            } else {
                self.desc.to_string()
            },
            priority: self.priority,
        }
    }
}

/// metav1.ObjectMeta's description of `name`.
pub(crate) const NAME_DESC: &str =
    "Name of the object, unique among objects of its kind in its namespace.";
/// metav1.ObjectMeta's description of `creationTimestamp`.
pub(crate) const CREATED_DESC: &str =
    "When the object was created (metadata.creationTimestamp), shown as an age.";

/// The object-name column every printer starts with.
pub(crate) const NAME: Col = text("Name", NAME_DESC).format("name");
/// The age column (from metadata.creationTimestamp).
pub(crate) const AGE: Col = text("Age", CREATED_DESC);
/// Wide column: container names of a pod template.
pub(crate) const CONTAINERS: Col =
    text("Containers", "Names of each container in the template.").wide();
/// Wide column: container images of a pod template.
pub(crate) const IMAGES: Col = text(
    "Images",
    "Images referenced by each container in the template.",
)
.wide();

/// How a kind's row cells are computed.
pub(crate) type CellFn = fn(&Value, DateTime<Utc>) -> Vec<Value>;

/// A printer held as data: its columns and its cell function.
#[derive(Clone, Copy)]
pub(crate) struct Table {
    pub(crate) columns: &'static [Col],
    pub(crate) cells: CellFn,
}

impl Printer for Table {
    fn columns(&self) -> Vec<ColumnDefinition> {
        self.columns.iter().map(Col::definition).collect()
    }

    fn cells(&self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        (self.cells)(obj, now)
    }
}

/// Builds a row of cells from values convertible into JSON.
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$(serde_json::Value::from($cell)),*] };
}
pub(crate) use row;

/// The default table (rest.NewDefaultTableConvertor): Name and Created At.
const DEFAULT_TABLE: Table = Table {
    columns: &[NAME, col("Created At", "date", CREATED_DESC)],
    cells: default_cells,
};

/// Name and the creation time in RFC 3339 UTC (Go's zero time when unset).
fn default_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = helpers::time_at(obj, "/metadata/creationTimestamp").map_or_else(
        || "0001-01-01T00:00:00Z".to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    row![helpers::name(obj), created]
}

/// Every built-in (group, kind) with its own printer. Kinds upstream serves with
/// the default table (Role, ClusterRole, LimitRange, CustomResourceDefinition, …)
/// are deliberately absent.
#[rustfmt::skip]
const BUILTIN: &[(&str, &str, Table)] = &[
    ("", "Pod", core_group::POD),
    ("", "PodTemplate", core_group::POD_TEMPLATE),
    ("", "Service", core_group::SERVICE),
    ("", "Endpoints", core_group::ENDPOINTS),
    ("", "Namespace", core_group::NAMESPACE),
    ("", "Node", core_group::NODE),
    ("", "ConfigMap", core_group::CONFIG_MAP),
    ("", "Secret", core_group::SECRET),
    ("", "ServiceAccount", core_group::SERVICE_ACCOUNT),
    ("", "ReplicationController", core_group::REPLICATION_CONTROLLER),
    ("", "ResourceQuota", core_group::RESOURCE_QUOTA),
    ("", "Event", events::EVENT),
    ("events.k8s.io", "Event", events::EVENTS_EVENT),
    ("", "PersistentVolume", storage::PERSISTENT_VOLUME),
    ("", "PersistentVolumeClaim", storage::PERSISTENT_VOLUME_CLAIM),
    ("storage.k8s.io", "StorageClass", storage::STORAGE_CLASS),
    ("storage.k8s.io", "CSIDriver", storage::CSI_DRIVER),
    ("storage.k8s.io", "CSINode", storage::CSI_NODE),
    ("storage.k8s.io", "VolumeAttachment", storage::VOLUME_ATTACHMENT),
    ("apps", "Deployment", apps::DEPLOYMENT),
    ("apps", "ReplicaSet", apps::REPLICA_SET),
    ("apps", "StatefulSet", apps::STATEFUL_SET),
    ("apps", "DaemonSet", apps::DAEMON_SET),
    ("apps", "ControllerRevision", apps::CONTROLLER_REVISION),
    ("batch", "Job", apps::JOB),
    ("batch", "CronJob", apps::CRON_JOB),
    ("autoscaling", "HorizontalPodAutoscaler", cluster::HPA),
    ("policy", "PodDisruptionBudget", cluster::PDB),
    ("networking.k8s.io", "Ingress", cluster::INGRESS),
    ("networking.k8s.io", "IngressClass", cluster::INGRESS_CLASS),
    ("networking.k8s.io", "NetworkPolicy", cluster::NETWORK_POLICY),
    ("discovery.k8s.io", "EndpointSlice", cluster::ENDPOINT_SLICE),
    ("coordination.k8s.io", "Lease", cluster::LEASE),
    ("scheduling.k8s.io", "PriorityClass", cluster::PRIORITY_CLASS),
    ("node.k8s.io", "RuntimeClass", cluster::RUNTIME_CLASS),
    ("rbac.authorization.k8s.io", "RoleBinding", cluster::ROLE_BINDING),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding", cluster::CLUSTER_ROLE_BINDING),
    ("certificates.k8s.io", "CertificateSigningRequest", cluster::CSR),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema", cluster::FLOW_SCHEMA),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration", cluster::PRIORITY_LEVEL),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration", cluster::WEBHOOKS),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", cluster::WEBHOOKS),
    ("apiregistration.k8s.io", "APIService", cluster::API_SERVICE),
];

#[cfg(test)]
pub(crate) mod testutil {
    use chrono::{DateTime, Utc};
    use serde_json::Value;

    /// A fixed "now" for tests: 2024-05-01T12:00:00Z.
    pub(crate) fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    /// The RFC 3339 time `secs` seconds before `now()`.
    pub(crate) fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Cells of `obj` printed by the built-in printer for (group, kind).
    pub(crate) fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
        super::printer_for(group, kind).cells(obj, now())
    }

    /// Column names of the built-in printer for (group, kind).
    pub(crate) fn names(group: &str, kind: &str) -> Vec<String> {
        super::printer_for(group, kind)
            .columns()
            .into_iter()
            .map(|c| c.name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{ago, cells, names};
    use super::*;
    use serde_json::json;

    #[test]
    fn flow_schemas_are_listed_by_precedence_then_name() {
        let row = |name: &str, precedence: i64| json!({"cells": [name, "pl", precedence]});
        let mut rows = vec![
            row("catch-all", 10000),
            row("b", 500),
            row("a", 500),
            row("exempt", 1),
        ];
        order_rows("flowcontrol.apiserver.k8s.io", "FlowSchema", &mut rows);
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r["cells"][0].as_str().unwrap())
            .collect();
        assert_eq!(names, ["exempt", "a", "b", "catch-all"]);
    }

    fn secs(s: i64) -> String {
        human_duration(chrono::Duration::seconds(s))
    }

    #[test]
    fn human_duration_matches_upstream_rules() {
        assert_eq!(secs(-5), "<invalid>");
        assert_eq!(secs(-1), "0s");
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(120), "2m");
        assert_eq!(secs(5 * 60 + 7), "5m7s");
        assert_eq!(secs(10 * 60 + 7), "10m");
        assert_eq!(secs(179 * 60), "179m");
        assert_eq!(secs(3 * 3600 + 12 * 60 + 5), "3h12m");
        assert_eq!(secs(7 * 3600), "7h");
        assert_eq!(secs(47 * 3600), "47h");
        assert_eq!(secs(2 * 86400), "2d");
        assert_eq!(secs(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(secs(8 * 86400), "8d");
        assert_eq!(secs(729 * 86400), "729d");
        assert_eq!(secs(730 * 86400), "2y");
        assert_eq!(secs(800 * 86400), "2y70d");
        assert_eq!(secs(365 * 9 * 86400), "9y");
        assert_eq!(human_duration(chrono::Duration::milliseconds(-1500)), "0s");
    }

    #[test]
    fn unknown_kinds_get_the_default_table() {
        assert_eq!(
            names("rbac.authorization.k8s.io", "Role"),
            ["Name", "Created At"]
        );
        assert_eq!(
            names("apiextensions.k8s.io", "CustomResourceDefinition"),
            ["Name", "Created At"]
        );
        assert_eq!(names("", "LimitRange"), ["Name", "Created At"]);
        let p = printer_for("example.com", "Widget");
        assert_eq!(p.columns()[1].type_, "date");
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T11:00:00Z"}});
        assert_eq!(
            cells("example.com", "Widget", &obj),
            [json!("w"), json!("2024-05-01T11:00:00Z")]
        );
        assert_eq!(
            cells("x", "Y", &json!({})),
            [json!(""), json!("0001-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn columns_serialize_like_table_column_definitions() {
        let c = printer_for("", "Pod").columns();
        let v = serde_json::to_value(&c[0]).expect("serializes");
        assert_eq!(v["name"], "Name");
        assert_eq!(v["type"], "string");
        assert_eq!(v["format"], "name");
        assert_eq!(v["priority"], 0);
        assert_eq!(c.last().map(|c| c.priority), Some(1));
    }

    #[test]
    fn every_builtin_row_matches_its_columns_even_for_empty_objects() {
        let full = json!({"metadata": {"name": "x", "creationTimestamp": ago(60)}});
        let confused = json!({
            "apiVersion": "autoscaling/v1", "metadata": {"name": 5, "labels": "x", "creationTimestamp": "soon",
                "deletionTimestamp": 1, "ownerReferences": [{"controller": true, "apiVersion": "a/b/c"}]},
            "spec": {"replicas": "3", "containers": "x", "ports": [1, "a", {"port": "80"}], "metrics": [1, {"type": "Resource"}],
                     "selector": {"matchLabels": {"a": 1}}, "rules": [null], "initContainers": [{"name": 1}],
                     "targetCPUUtilizationPercentage": "50", "expirationSeconds": i64::MAX, "limited": 3},
            "status": {"conditions": "x", "containerStatuses": [null, 5, {"restartCount": i64::MAX,
                       "lastState": {"terminated": {"finishedAt": 3}}}, {"restartCount": i64::MAX}],
                       "initContainerStatuses": [{"state": {"terminated": "x"}}], "hard": {"pods": 1}},
            "subsets": [{"addresses": [{"ip": 1}], "ports": "x"}], "endpoints": [{"addresses": [1]}],
            "series": {"count": "x"}, "webhooks": {}, "value": 1.5
        });
        for (group, kind, table) in BUILTIN {
            for obj in [
                json!({}),
                json!(null),
                json!([1, 2]),
                full.clone(),
                confused.clone(),
            ] {
                let row = table.cells(&obj, testutil::now());
                assert_eq!(row.len(), table.columns.len(), "{group}/{kind}");
            }
        }
    }
}
