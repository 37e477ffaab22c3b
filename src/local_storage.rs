//! Local storage (k3s's `local-storage` add-on, rancher's local-path
//! provisioner), run by every node for itself: a claim of the `local-path`
//! class whose pod the scheduler placed here (`selected-node`) gets a
//! directory `<storage dir>/pvc-<uid>_<namespace>_<name>` (mode 0777, the
//! base 0700) and a `local` PersistentVolume pinned to this node; a
//! released volume of ours with the Delete policy loses its directory and
//! then its PV. No helper pods: the node makes and removes directories
//! itself. What to do is decided by [`plan`] over the caches; [`run`] does it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::api::values::storage::{
    BETA_STORAGE_PROVISIONER, PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER,
};
use crate::runtime::{Informers, Shutdown};
use crate::telemetry::events::Recorder;

/// The provisioner's name, as k3s's.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The default StorageClass the server creates.
pub const CLASS: &str = "local-path";
/// The volume annotation naming the node that made it.
const VOLUME_NODE: &str = "local.path.provisioner/selected-node";

/// The StorageClass `local-path`, default, as k3s ships it.
pub fn storage_class() -> serde_json::Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true",
            "defaultVolumeType": "local"}},
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    })
}

/// What one node's provisioner does.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Make the directory and the volume for the claim.
    Provision {
        /// The claim.
        claim: Box<PersistentVolumeClaim>,
        /// The volume to create (its directory is `spec.local.path`).
        volume: Box<PersistentVolume>,
    },
    /// The claim asks for what local-path cannot give.
    Refuse {
        /// The claim.
        claim: Box<PersistentVolumeClaim>,
        /// Why.
        message: String,
    },
    /// Remove a released volume's directory, then the volume.
    Delete {
        /// The volume.
        volume: Box<PersistentVolume>,
        /// Its directory, when it lies in this node's storage directory.
        dir: Option<PathBuf>,
    },
}

fn annotation<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim.annotations().get(key).map(String::as_str)
}

/// Why local-path cannot provision the claim, if it cannot.
fn refusal(claim: &PersistentVolumeClaim) -> Option<String> {
    let spec = claim.spec.as_ref()?;
    if spec.selector.is_some() {
        return Some("claim.Spec.Selector is not supported".into());
    }
    let modes = spec.access_modes.clone().unwrap_or_default();
    if modes
        .iter()
        .any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod")
    {
        return Some(
            "NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) access modes".into(),
        );
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return Some(format!(
            "{PROVISIONER} does not support block volume provisioning"
        ));
    }
    None
}

/// The volume local-path makes for `claim` on `node` under `base` (None
/// for a claim without a storage request, which validation refuses).
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    node: &str,
    base: &Path,
) -> Option<PersistentVolume> {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let spec = claim.spec.clone().unwrap_or_default();
    let path = base.join(format!("pvc-{uid}_{namespace}_{name}"));
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()?;
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {
            VOLUME_NODE: node, PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "accessModes": spec.access_modes,
            "capacity": {"storage": storage},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": namespace,
                         "name": name, "uid": uid, "resourceVersion": claim.metadata.resource_version},
            "local": {"path": path.to_string_lossy()},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name.unwrap_or_else(|| CLASS.into()),
            "volumeMode": "Filesystem",
        },
    }))
    .ok()
}

/// The node a local-path volume belongs to.
fn volume_node(pv: &PersistentVolume) -> Option<String> {
    if let Some(node) = pv.annotations().get(VOLUME_NODE) {
        return Some(node.clone());
    }
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == "kubernetes.io/hostname" && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

/// What this node does now: provision claims placed here that have no
/// volume yet, delete our released volumes whose policy says so.
pub fn plan(
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
    node: &str,
    base: &Path,
) -> Vec<Task> {
    let mut tasks = Vec::new();
    for claim in claims {
        let ours = annotation(claim, STORAGE_PROVISIONER)
            .or_else(|| annotation(claim, BETA_STORAGE_PROVISIONER))
            == Some(PROVISIONER);
        let bound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty());
        if !ours
            || bound
            || annotation(claim, SELECTED_NODE) != Some(node)
            || claim.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default());
        if volumes.iter().any(|v| v.name_any() == name) {
            continue;
        }
        let refused = refusal(claim);
        tasks.push(match (refused, volume_for(claim, node, base)) {
            (None, Some(volume)) => Task::Provision {
                claim: Box::new((**claim).clone()),
                volume: Box::new(volume),
            },
            (refused, _) => Task::Refuse {
                claim: Box::new((**claim).clone()),
                message: refused.unwrap_or_else(|| "the claim requests no storage".into()),
            },
        });
    }
    for pv in volumes {
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete");
        let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
        if !(released && delete && ours)
            || pv.metadata.deletion_timestamp.is_some()
            || volume_node(pv).as_deref() != Some(node)
        {
            continue;
        }
        // Only a directory inside our storage directory is ever removed.
        let dir = pv
            .spec
            .as_ref()
            .and_then(|s| {
                s.local
                    .as_ref()
                    .map(|l| l.path.clone())
                    .or_else(|| s.host_path.as_ref().map(|h| h.path.clone()))
            })
            .map(PathBuf::from)
            .filter(|p| p.parent() == Some(base) && p.file_name().is_some());
        tasks.push(Task::Delete {
            volume: Box::new((**pv).clone()),
            dir,
        });
    }
    tasks
}

/// This node's provisioner.
pub struct LocalStorage {
    /// The node's name.
    pub node: String,
    /// Where volumes' directories go (`--default-local-storage-path`).
    pub dir: PathBuf,
}

impl LocalStorage {
    /// Runs until `shutdown`: reads the node's shared caches, writes
    /// volumes and events as `client`.
    pub async fn run(
        self,
        informers: Informers,
        client: kube::Client,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        shutdown.until(self.provision(informers, client)).await;
        Ok(())
    }

    async fn provision(self, informers: Informers, client: kube::Client) {
        let (claims, claim_changes) = informers.cache::<PersistentVolumeClaim>();
        let (volumes, volume_changes) = informers.cache::<PersistentVolume>();
        let changes = futures::stream::select(claim_changes, volume_changes).boxed();
        let mut passes =
            crate::runtime::passes(changes, Duration::from_secs(30), Duration::from_millis(50));
        let recorder = Recorder::new(
            client.clone(),
            &format!("{PROVISIONER}_{}", self.node),
            None,
        );
        let mut refused = std::collections::HashSet::new();
        while passes.next().await.is_some() {
            if !informers.informer::<PersistentVolumeClaim>().filled()
                || !informers.informer::<PersistentVolume>().filled()
            {
                continue;
            }
            for task in plan(&claims.state(), &volumes.state(), &self.node, &self.dir) {
                if let Task::Refuse { claim, message } = &task {
                    // Said once per claim (by uid).
                    if !refused.insert(claim.metadata.uid.clone()) {
                        continue;
                    }
                    let message = format!(
                        "failed to provision volume with StorageClass {CLASS:?}: {message}"
                    );
                    recorder
                        .record(claim.as_ref(), "Warning", "ProvisioningFailed", &message)
                        .await;
                    continue;
                }
                if let Err(e) = self.act(&client, &recorder, task).await {
                    tracing::warn!(err = %format!("{e:#}"), "local storage");
                }
            }
        }
    }

    async fn act(
        &self,
        client: &kube::Client,
        recorder: &Recorder,
        task: Task,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        match task {
            Task::Provision { claim, volume } => {
                let message = format!(
                    "External provisioner is provisioning volume for claim \"{}/{}\"",
                    claim.namespace().unwrap_or_default(),
                    claim.name_any()
                );
                recorder
                    .record(claim.as_ref(), "Normal", "Provisioning", &message)
                    .await;
                let path = volume
                    .spec
                    .as_ref()
                    .and_then(|s| s.local.as_ref())
                    .map(|l| PathBuf::from(&l.path))
                    .context("the volume's path")?;
                make_dir(&self.dir, &path).with_context(|| format!("making {}", path.display()))?;
                match Api::<PersistentVolume>::all(client.clone())
                    .create(&PostParams::default(), &volume)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if crate::runtime::already_exists(&e) => {}
                    Err(e) => {
                        let message =
                            format!("failed to provision volume with StorageClass {CLASS:?}: {e}");
                        recorder
                            .record(claim.as_ref(), "Warning", "ProvisioningFailed", &message)
                            .await;
                        return Err(e).context("creating the volume");
                    }
                }
                let message = format!("Successfully provisioned volume {}", volume.name_any());
                recorder
                    .record(claim.as_ref(), "Normal", "ProvisioningSucceeded", &message)
                    .await;
                tracing::info!(volume = %volume.name_any(), path = %path.display(), "provisioned");
            }
            Task::Delete { volume, dir } => {
                if let Some(dir) = &dir
                    && let Err(e) = std::fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    recorder
                        .record(
                            volume.as_ref(),
                            "Warning",
                            "VolumeFailedDelete",
                            &e.to_string(),
                        )
                        .await;
                    return Err(e).with_context(|| format!("removing {}", dir.display()));
                }
                match Api::<PersistentVolume>::all(client.clone())
                    .delete(&volume.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e).context("deleting the volume"),
                }
                tracing::info!(volume = %volume.name_any(), "deleted");
            }
            Task::Refuse { .. } => {}
        }
        Ok(())
    }
}

/// The volume's directory, 0777 whatever the umask, in a base kept 0700.
fn make_dir(base: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(extra: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        let mut c = json!({"metadata": {"name": "data-web-0", "namespace": "default", "uid": "u1",
            "annotations": {STORAGE_PROVISIONER: PROVISIONER, SELECTED_NODE: "n1"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path"}});
        json_patch::merge(&mut c, &extra);
        Arc::new(serde_json::from_value(c).unwrap())
    }

    #[test]
    fn claims_placed_here_get_a_directory_and_a_pinned_volume() {
        let base = Path::new("/var/lib/kelp/storage");
        let tasks = plan(&[claim(json!({}))], &[], "n1", base);
        let [Task::Provision { volume, .. }] = tasks.as_slice() else {
            panic!("{tasks:?}");
        };
        assert_eq!(volume.name_any(), "pvc-u1");
        let spec = volume.spec.as_ref().unwrap();
        assert_eq!(
            spec.local.as_ref().unwrap().path,
            "/var/lib/kelp/storage/pvc-u1_default_data-web-0"
        );
        assert_eq!(spec.claim_ref.as_ref().unwrap().uid.as_deref(), Some("u1"));
        assert_eq!(volume_node(volume).as_deref(), Some("n1"));
        assert_eq!(spec.capacity.as_ref().unwrap()["storage"].0, "1Gi");
        // Another node's claim, a made volume, a bound claim: nothing.
        assert!(plan(&[claim(json!({}))], &[], "n2", base).is_empty());
        let made = Arc::new(volume.as_ref().clone());
        assert!(plan(&[claim(json!({}))], &[made], "n1", base).is_empty());
        assert!(
            plan(
                &[claim(json!({"spec": {"volumeName": "x"}}))],
                &[],
                "n1",
                base
            )
            .is_empty()
        );
        let rwx = plan(
            &[claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}}))],
            &[],
            "n1",
            base,
        );
        assert!(matches!(rwx.as_slice(), [Task::Refuse { .. }]));
    }

    #[test]
    fn only_our_released_volumes_inside_the_base_are_deleted() {
        let base = Path::new("/s");
        let mut pv = volume_for(&claim(json!({})), "n1", base).expect("a volume");
        pv.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        let tasks = plan(&[], &[Arc::new(pv.clone())], "n1", base);
        let [Task::Delete { dir, .. }] = tasks.as_slice() else {
            panic!("{tasks:?}");
        };
        assert_eq!(
            dir.as_deref(),
            Some(Path::new("/s/pvc-u1_default_data-web-0"))
        );
        assert!(plan(&[], &[Arc::new(pv.clone())], "n2", base).is_empty());
        pv.spec.as_mut().unwrap().local.as_mut().unwrap().path = "/etc".into();
        let tasks = plan(&[], &[Arc::new(pv.clone())], "n1", base);
        assert!(matches!(tasks.as_slice(), [Task::Delete { dir: None, .. }]));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(plan(&[], &[Arc::new(pv)], "n1", base).is_empty());
    }
}
