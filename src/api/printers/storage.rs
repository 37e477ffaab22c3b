//! Storage printers: PersistentVolumes and claims (core) and storage.k8s.io kinds.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::helpers::{
    NONE, UNSET, age, arr, at, deleting, len_at, name, non_empty_or, obj, opt_bool, opt_str,
    quantity_or_zero, str_at, str_or,
};
use super::{AGE, NAME, Table, col, int, row, text};

/// Access modes in the fixed order RWO,ROX,RWX,RWOP.
fn access_modes(v: &Value, ptr: &str) -> String {
    let modes = arr(v, ptr);
    let has = |m: &str| modes.iter().any(|x| x.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class: the beta annotation wins over spec.storageClassName.
fn storage_class(v: &Value) -> String {
    let beta = obj(v, "/metadata/annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    beta.unwrap_or(str_at(v, "/spec/storageClassName"))
        .to_string()
}

pub(crate) const PERSISTENT_VOLUME: Table = Table {
    columns: &[
        NAME,
        text("Capacity", ""),
        text("Access Modes", ""),
        text("Reclaim Policy", ""),
        text("Status", ""),
        text("Claim", ""),
        text("StorageClass", "StorageClass of the pv"),
        text("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        text("Reason", ""),
        AGE,
        text("VolumeMode", "").wide(),
    ],
    cells: pv_cells,
};

fn pv_cells(pv: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = at(pv, "/spec/claimRef")
        .map(|c| format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")))
        .unwrap_or_default();
    let phase = if deleting(pv) {
        "Terminating"
    } else {
        str_at(pv, "/status/phase")
    };
    row![
        name(pv),
        quantity_or_zero(at(pv, "/spec/capacity/storage")),
        access_modes(pv, "/spec/accessModes"),
        str_at(pv, "/spec/persistentVolumeReclaimPolicy"),
        phase,
        claim,
        storage_class(pv),
        str_or(pv, "/spec/volumeAttributesClassName", UNSET),
        str_at(pv, "/status/reason"),
        age(pv, now),
        str_or(pv, "/spec/volumeMode", UNSET),
    ]
}

pub(crate) const PERSISTENT_VOLUME_CLAIM: Table = Table {
    columns: &[
        NAME,
        text(
            "Status",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        text("Volume", ""),
        text("Capacity", ""),
        text("Access Modes", ""),
        text("StorageClass", "StorageClass of the pvc"),
        text("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        AGE,
        text("VolumeMode", "").wide(),
    ],
    cells: pvc_cells,
};

fn pvc_cells(pvc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating"
    } else {
        str_at(pvc, "/status/phase")
    };
    let volume = str_at(pvc, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_or_zero(at(pvc, "/status/capacity/storage")),
            access_modes(pvc, "/status/accessModes"),
        )
    };
    row![
        name(pvc),
        phase,
        volume,
        capacity,
        modes,
        storage_class(pvc),
        str_or(pvc, "/spec/volumeAttributesClassName", UNSET),
        age(pvc, now),
        str_or(pvc, "/spec/volumeMode", UNSET),
    ]
}
pub(crate) const STORAGE_CLASS: Table = Table {
    columns: &[
        NAME,
        text(
            "Provisioner",
            "provisioner indicates the type of the provisioner.",
        ),
        text("ReclaimPolicy", ""),
        text("VolumeBindingMode", ""),
        text("AllowVolumeExpansion", ""),
        AGE,
    ],
    cells: |sc, now| {
        let mut display = str_at(sc, "/metadata/name").to_string();
        if crate::api::values::storage::is_default_class(sc) {
            display.push_str(" (default)");
        }
        row![
            display,
            str_at(sc, "/provisioner"),
            opt_str(sc, "/reclaimPolicy").unwrap_or("Delete"),
            opt_str(sc, "/volumeBindingMode").unwrap_or("Immediate"),
            opt_bool(sc, "/allowVolumeExpansion").unwrap_or(false),
            age(sc, now),
        ]
    },
};

pub(crate) const CSI_DRIVER: Table = Table {
    columns: &[
        NAME,
        col("AttachRequired", "boolean", ""),
        col("PodInfoOnMount", "boolean", ""),
        col("StorageCapacity", "boolean", ""),
        text("TokenRequests", ""),
        col("RequiresRepublish", "boolean", ""),
        text("Modes", ""),
        AGE,
    ],
    cells: |d, now| {
        let tokens = at(d, "/spec/tokenRequests").map_or_else(
            || UNSET.to_string(),
            |t| {
                t.as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| str_at(r, "/audience"))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        );
        let modes: Vec<&str> = arr(d, "/spec/volumeLifecycleModes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        row![
            name(d),
            opt_bool(d, "/spec/attachRequired").unwrap_or(true),
            opt_bool(d, "/spec/podInfoOnMount").unwrap_or(false),
            opt_bool(d, "/spec/storageCapacity").unwrap_or(false),
            tokens,
            opt_bool(d, "/spec/requiresRepublish").unwrap_or(false),
            non_empty_or(&modes.join(","), NONE),
            age(d, now),
        ]
    },
};

pub(crate) const CSI_NODE: Table = Table {
    columns: &[NAME, int("Drivers", ""), AGE],
    cells: |n, now| row![name(n), len_at(n, "/spec/drivers"), age(n, now)],
};

pub(crate) const VOLUME_ATTACHMENT: Table = Table {
    columns: &[
        NAME,
        text("Attacher", "").format("name"),
        text("PV", ""),
        text("Node", ""),
        col("Attached", "boolean", ""),
        AGE,
    ],
    cells: |va, now| {
        row![
            name(va),
            str_at(va, "/spec/attacher"),
            str_at(va, "/spec/source/persistentVolumeName"),
            str_at(va, "/spec/nodeName"),
            opt_bool(va, "/status/attached").unwrap_or(false),
            age(va, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::super::testutil::{ago, cells};
    use serde_json::json;

    #[test]
    fn persistent_volumes_and_claims() {
        let pv = json!({"metadata": {"name": "pv-1", "creationTimestamp": ago(7200)},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "db", "name": "data"},
                     "storageClassName": "fast", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            cells("", "PersistentVolume", &pv),
            [
                json!("pv-1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("db/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("120m"),
                json!("Filesystem")
            ]
        );
        let mut gone = pv.clone();
        gone["metadata"]["deletionTimestamp"] = json!(ago(1));
        gone["metadata"]["annotations"] =
            json!({"volume.beta.kubernetes.io/storage-class": "legacy"});
        let row = cells("", "PersistentVolume", &gone);
        assert_eq!(
            (row[4].clone(), row[6].clone()),
            (json!("Terminating"), json!("legacy"))
        );
        assert_eq!(
            cells("", "PersistentVolume", &json!({}))[1..3],
            [json!("0"), json!("")]
        );

        let pvc = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv-1", "storageClassName": "fast",
                "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}});
        assert_eq!(
            cells("", "PersistentVolumeClaim", &pvc)[1..7],
            [
                json!("Bound"),
                json!("pv-1"),
                json!("10Gi"),
                json!("RWOP"),
                json!("fast"),
                json!("<unset>")
            ]
        );
        let pending = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}, "status": {"phase": "Pending"}});
        assert_eq!(
            cells("", "PersistentVolumeClaim", &pending)[1..6],
            [json!("Pending"), json!(""), json!(""), json!(""), json!("")]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            cells("storage.k8s.io", "StorageClass", &sc)[..5],
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
        let plain = json!({"metadata": {"name": "slow"}, "provisioner": "p", "reclaimPolicy": "Retain",
                           "allowVolumeExpansion": true});
        assert_eq!(
            cells("storage.k8s.io", "StorageClass", &plain)[..5],
            [
                json!("slow"),
                json!("p"),
                json!("Retain"),
                json!("Immediate"),
                json!(true)
            ]
        );
    }

    #[test]
    fn csi_kinds_and_volume_attachments() {
        let csi = json!({"metadata": {"name": "csi.example.com"}, "spec": {"tokenRequests": [{"audience": "a"}, {"audience": "b"}],
                         "volumeLifecycleModes": ["Persistent", "Ephemeral"]}});
        assert_eq!(
            cells("storage.k8s.io", "CSIDriver", &csi)[1..7],
            [
                json!(true),
                json!(false),
                json!(false),
                json!("a,b"),
                json!(false),
                json!("Persistent,Ephemeral")
            ]
        );
        assert_eq!(
            cells("storage.k8s.io", "CSIDriver", &json!({}))[4..7],
            [json!("<unset>"), json!(false), json!("<none>")]
        );
        let va = json!({"spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv-1"}},
                        "status": {"attached": true}});
        assert_eq!(
            cells("storage.k8s.io", "VolumeAttachment", &va)[1..5],
            [
                json!("csi.example.com"),
                json!("pv-1"),
                json!("n1"),
                json!(true)
            ]
        );
        assert_eq!(
            cells(
                "storage.k8s.io",
                "CSINode",
                &json!({"spec": {"drivers": [{}]}})
            )[1],
            json!(1)
        );
    }
}
