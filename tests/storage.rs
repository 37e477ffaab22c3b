//! End-to-end tests of persistent storage (root: real containerd + runc):
//! the default `local-path` class, a StatefulSet's claims provisioned on
//! the node the scheduler chose, data that survives its pod and a kelp
//! restart, volume figures, and volumes and directories gone with their
//! claims; `--disable local-storage,network-policy,ingress` leaves the add-ons out.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{BUSYBOX, NODE, Server};

fn statefulset() -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  podManagementPolicy: Parallel
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {BUSYBOX}
        command: [sh, -c, 'echo \"$(hostname) $(date +%s%N)\" >> /data/log; exec sleep 3600']
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 64Mi
"
    )
}

fn wait_ready(kubectl: &common::Kubectl, pod: &str) {
    kubectl.wait_for(
        &[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        90,
        |s| s == "True",
    );
}

fn log_lines(kubectl: &common::Kubectl, pod: &str) -> Vec<String> {
    kubectl
        .ok(&["exec", pod, "--", "cat", "/data/log"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn statefulset_claims_are_provisioned_kept_and_removed_with_their_volumes() {
    let mut server = Server::start_node(&[]);
    let kubectl = server.kubectl("kubectl");
    let dir = server.path("manifests");
    let storage = server.path("data/storage");

    // The default class, as k3s ships it.
    let classes = kubectl.ok(&["get", "storageclass"]);
    assert!(
        classes.contains("local-path (default)")
            && classes.contains("rancher.io/local-path")
            && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );

    // A claim the API refuses, with upstream's message.
    let bad = kubectl.fails(&[
        "create",
        "-f",
        common::write(
            &dir,
            "bad.yaml",
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: bad\nspec:\n  resources:\n    requests:\n      storage: 1Gi\n",
        )
        .to_str()
        .expect("path"),
    ]);
    assert!(
        bad.contains("spec.accessModes: Required value: at least 1 access mode is required"),
        "{bad}"
    );

    kubectl.apply(&dir, "web.yaml", &statefulset());
    wait_ready(&kubectl, "web-0");
    wait_ready(&kubectl, "web-1");
    let claims = kubectl.ok(&["get", "pvc"]);
    for claim in ["data-web-0", "data-web-1"] {
        let line = claims
            .lines()
            .find(|l| l.starts_with(claim))
            .unwrap_or_else(|| panic!("{claim} missing:\n{claims}"));
        assert!(
            line.contains("Bound")
                && line.contains("64Mi")
                && line.contains("RWO")
                && line.contains("local-path"),
            "{line}"
        );
    }
    // Each claim's volume: local, pinned to this node, its directory 0777.
    let claim_uid = kubectl.ok(&["get", "pvc", "data-web-0", "-o", "jsonpath={.metadata.uid}"]);
    let pv = format!("pvc-{claim_uid}");
    assert_eq!(
        kubectl.ok(&[
            "get",
            "pvc",
            "data-web-0",
            "-o",
            "jsonpath={.spec.volumeName}"
        ]),
        pv
    );
    let path = kubectl.ok(&["get", "pv", &pv, "-o", "jsonpath={.spec.local.path}"]);
    let expected = storage.join(format!("pvc-{claim_uid}_default_data-web-0"));
    assert_eq!(path, expected.display().to_string());
    assert_eq!(
        kubectl.ok(&[
            "get", "pv", &pv, "-o",
            "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ]),
        NODE
    );
    let mode = std::fs::metadata(&expected)
        .expect("volume dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o777, "volume directory mode {mode:o}");
    let volumes = kubectl.ok(&["get", "pv"]);
    assert!(
        volumes.contains("Delete") && volumes.contains("default/data-web-0"),
        "{volumes}"
    );
    let events = kubectl.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data-web-0",
    ]);
    assert!(
        events.contains("ProvisioningSucceeded")
            && events.contains(&format!("Successfully provisioned volume {pv}")),
        "{events}"
    );

    // The volume's figures: /stats/summary names the claim, /metrics has its series.
    let node = format!("/api/v1/nodes/{NODE}/proxy");
    let summary = kubectl.wait_for(
        &["get", "--raw", &format!("{node}/stats/summary")],
        30,
        |s| s.contains("\"pvcRef\""),
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("summary json");
    let volume = summary["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["podRef"]["name"] == "web-0")
        .and_then(|p| p["volume"].as_array())
        .and_then(|v| v.iter().find(|v| v["name"] == "data"))
        .cloned()
        .unwrap_or_else(|| panic!("no data volume for web-0: {summary}"));
    assert_eq!(volume["pvcRef"]["name"], "data-web-0");
    assert!(
        volume["capacityBytes"].as_u64().unwrap_or(0) > 0,
        "{volume}"
    );
    let metrics = kubectl.ok(&["get", "--raw", &format!("{node}/metrics")]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kubelet_volume_stats_capacity_bytes{")
                && l.contains("persistentvolumeclaim=\"data-web-1\"")),
        "no volume series in kubelet metrics"
    );

    // The data outlives the pod: a new web-0 finds the first one's line.
    let first = log_lines(&kubectl, "web-0");
    assert_eq!(first.len(), 1, "{first:?}");
    let old_uid = kubectl.ok(&["get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}"]);
    kubectl.ok(&["delete", "pod", "web-0", "--wait=true"]);
    kubectl.wait_for(
        &["get", "pod", "web-0", "-o", "jsonpath={.metadata.uid}"],
        60,
        |uid| !uid.is_empty() && uid != old_uid,
    );
    wait_ready(&kubectl, "web-0");
    let second = log_lines(&kubectl, "web-0");
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[0], first[0]);

    // And a kelp restart: web-1 keeps its data, and so does its successor.
    let before = log_lines(&kubectl, "web-1");
    server.stop();
    server.spawn();
    server.wait_node_ready();
    assert_eq!(log_lines(&kubectl, "web-1"), before);
    kubectl.ok(&["delete", "pod", "web-1", "--wait=true"]);
    kubectl.wait_for(&["get", "pod", "web-1", "-o", "name"], 60, |s| {
        !s.is_empty()
    });
    wait_ready(&kubectl, "web-1");
    let after = log_lines(&kubectl, "web-1");
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(after[0], before[0]);

    // Claims outlive their StatefulSet (retention Retain); deleting them
    // removes their volumes and directories.
    kubectl.ok(&["delete", "statefulset", "web", "--wait=true"]);
    kubectl.wait_for(
        &["get", "pods", "-l", "app=web", "-o", "name"],
        60,
        str::is_empty,
    );
    assert!(
        expected.exists(),
        "the claim's directory went with the pods"
    );
    kubectl.ok(&["delete", "pvc", "data-web-0", "data-web-1"]);
    kubectl.wait_for(&["get", "pv", "-o", "name"], 60, str::is_empty);
    kubectl.wait_for(&["get", "pvc", "-o", "name"], 30, str::is_empty);
    let left: Vec<_> = std::fs::read_dir(&storage)
        .expect("storage dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "directories left: {left:?}");
}

#[test]
fn disabled_add_ons_stay_out() {
    let server = Server::start_with(&[
        "--disable",
        "local-storage,network-policy,ingress,helm-controller",
    ]);
    let kubectl = server.kubectl("kubectl");
    kubectl.ok(&["get", "--raw", "/readyz"]);
    assert_eq!(kubectl.ok(&["get", "storageclass", "-o", "name"]), "");
    assert_eq!(kubectl.ok(&["get", "ingressclass", "-o", "name"]), "");
    // No HelmChart CRDs (the Addon CRD is there: the controllers run).
    kubectl.wait_for(&["get", "crd", "-o", "name"], 30, |out| {
        out.contains("addons.kelp.io")
    });
    // (registered at the same moment when the controller runs)
    std::thread::sleep(std::time::Duration::from_secs(2));
    let crds = kubectl.ok(&["get", "crd", "-o", "name"]);
    assert!(!crds.contains("helm.cattle.io"), "{crds}");
    // Joining nodes are told to run none.
    let config: serde_json::Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/v1-kelp/config"])).expect("json");
    for add_on in ["localStorage", "networkPolicy", "ingress"] {
        assert_eq!(config[add_on], serde_json::json!(false), "{config}");
    }
    // A claim then names no class and waits for a volume made by hand.
    let dir = server.path("manifests");
    kubectl.apply(
        &dir,
        "claim.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: c\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n",
    );
    kubectl.apply(
        &dir,
        "pv.yaml",
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: manual\nspec:\n  accessModes: [ReadWriteOnce]\n  capacity:\n    storage: 2Gi\n  hostPath:\n    path: /tmp/kelp-e2e-manual-volume\n",
    );
    kubectl.wait_for(
        &["get", "pvc", "c", "-o", "jsonpath={.status.phase}"],
        30,
        |p| p == "Bound",
    );
    assert_eq!(
        kubectl.ok(&[
            "get",
            "pv",
            "manual",
            "-o",
            "jsonpath={.spec.claimRef.name} {.status.phase}"
        ]),
        "c Bound"
    );
    // Retain keeps a released volume, claimRef and all.
    kubectl.ok(&["delete", "pvc", "c"]);
    kubectl.wait_for(
        &["get", "pv", "manual", "-o", "jsonpath={.status.phase}"],
        30,
        |p| p == "Released",
    );
}
