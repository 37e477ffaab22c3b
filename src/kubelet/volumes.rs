//! Pod volumes on the node, under `<data-dir>/agent/pods/<uid>/volumes/`:
//! emptyDir, hostPath, configMap, secret, downwardAPI and projected (with
//! service-account tokens). Each is a directory (or file) mounted into the
//! containers; they are removed with the pod.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume};

use kube::Api;
use serde_json::json;

use super::container::DataSource;

/// Why a volume could not be prepared (the pod waits, with this as message).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A referenced ConfigMap, Secret or key is missing.
    #[error("{0}")]
    Missing(String),
    /// The API could not be reached or refused.
    #[error("{0}")]
    Api(String),
    /// The node's file system refused.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The volume type is not supported by kelp.
    #[error("volume {0:?}: this volume type is not supported by kelp")]
    Unsupported(String),
}

/// A claim's volume as a pod mounts it: the pod's name for the volume,
/// the claim, the node directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimVolume {
    /// The pod's volume name.
    pub name: String,
    /// The claim's namespace and name.
    pub claim: (String, String),
    /// The directory on the node.
    pub path: PathBuf,
}

/// Pod uid → the pod and its claims' volumes.
type ClaimVolumesByPod =
    HashMap<String, (crate::api::values::summary::PodReference, Vec<ClaimVolume>)>;

/// The claims' volumes of the node's pods, by pod uid: what volume stats
/// are read from.
#[derive(Debug, Clone, Default)]
pub struct ClaimVolumes(std::sync::Arc<std::sync::Mutex<ClaimVolumesByPod>>);

impl ClaimVolumes {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClaimVolumesByPod> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes the claim volumes of `pod`, prepared at `paths`.
    pub fn record(&self, pod: &Pod, paths: &HashMap<String, PathBuf>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let claimed: Vec<ClaimVolume> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| {
                let claim = v.persistent_volume_claim.as_ref()?;
                Some(ClaimVolume {
                    name: v.name.clone(),
                    claim: (namespace.clone(), claim.claim_name.clone()),
                    path: paths.get(&v.name)?.clone(),
                })
            })
            .collect();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if claimed.is_empty() {
            self.lock().remove(&uid);
            return;
        }
        let reference = crate::api::values::summary::PodReference {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace,
            uid: uid.clone(),
        };
        self.lock().insert(uid, (reference, claimed));
    }

    /// Forgets a removed pod.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Every pod's claim volumes.
    pub fn all(&self) -> Vec<(crate::api::values::summary::PodReference, Vec<ClaimVolume>)> {
        self.lock().values().cloned().collect()
    }
}

/// The directory of a pod's volumes.
pub fn pod_dir(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir.join("agent").join("pods").join(uid)
}

/// Prepares every volume of the pod; returns name → host path.
pub async fn prepare(
    client: &kube::Client,
    pod: &Pod,
    data_dir: &Path,
    field: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let base = pod_dir(data_dir, &uid).join("volumes");
    let mut paths = HashMap::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let path = prepare_one(client, pod, &namespace, &base, &volume, field).await?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &kube::Client,
    pod: &Pod,
    namespace: &str,
    base: &Path,
    volume: &Volume,
    field: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<PathBuf, VolumeError> {
    let dir = |kind: &str| base.join(kind).join(&volume.name);
    if volume.empty_dir.is_some() {
        let d = dir("kubernetes.io~empty-dir");
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))?;
        return Ok(d);
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        return claimed_path(client, namespace, &claim.claim_name).await;
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, b"")?;
            }
            "Directory" if !path.is_dir() => {
                return Err(VolumeError::Missing(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                )));
            }
            "File" if !path.is_file() => {
                return Err(VolumeError::Missing(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                )));
            }
            _ => {}
        }
        return Ok(path);
    }
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    // ConfigMap and Secret keys to write.
    let mut keyed: Vec<Keyed> = Vec::new();
    let kind;
    let mode;
    if let Some(cm) = &volume.config_map {
        kind = "kubernetes.io~configmap";
        mode = cm.default_mode;
        keyed.push((
            DataSource::ConfigMap,
            cm.name.clone(),
            cm.items.clone(),
            cm.optional,
        ));
    } else if let Some(secret) = &volume.secret {
        kind = "kubernetes.io~secret";
        mode = secret.default_mode;
        let name = secret.secret_name.clone().unwrap_or_default();
        keyed.push((
            DataSource::Secret,
            name,
            secret.items.clone(),
            secret.optional,
        ));
    } else if let Some(downward) = &volume.downward_api {
        kind = "kubernetes.io~downward-api";
        mode = downward.default_mode;
        let items = downward.items.as_deref().unwrap_or_default();
        downward_files(items, mode_or_default(mode), field, &mut files)?;
    } else if let Some(projected) = &volume.projected {
        kind = "kubernetes.io~projected";
        mode = projected.default_mode;
        for source in projected.sources.as_deref().unwrap_or_default() {
            if let Some(cm) = &source.config_map {
                keyed.push((
                    DataSource::ConfigMap,
                    cm.name.clone(),
                    cm.items.clone(),
                    cm.optional,
                ));
            }
            if let Some(secret) = &source.secret {
                keyed.push((
                    DataSource::Secret,
                    secret.name.clone(),
                    secret.items.clone(),
                    secret.optional,
                ));
            }
            if let Some(downward) = &source.downward_api {
                let items = downward.items.as_deref().unwrap_or_default();
                downward_files(items, mode_or_default(mode), field, &mut files)?;
            }
            if let Some(token) = &source.service_account_token {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into());
                let jwt = service_account_token(
                    client,
                    namespace,
                    &sa,
                    pod,
                    token.audience.clone(),
                    token.expiration_seconds.unwrap_or(3607),
                )
                .await?;
                files.insert(
                    token.path.clone(),
                    (jwt.into_bytes(), mode_or_default(mode)),
                );
            }
        }
    } else {
        return Err(VolumeError::Unsupported(volume.name.clone()));
    }
    for (source, name, items, optional) in keyed {
        let what = (source, name.as_str(), items.as_deref(), optional);
        keyed_files(client, namespace, what, mode_or_default(mode), &mut files).await?;
    }
    let d = dir(kind);
    write_files(&d, &files)?;
    Ok(d)
}

/// The directory of the volume bound to a claim (upstream's populator:
/// the claim must be bound, its volume must point back at it). Local and
/// hostPath volumes are node directories the runtime bind-mounts as they
/// are; other sources need drivers kelp does not have.
async fn claimed_path(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<PathBuf, VolumeError> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let api_error = |e: kube::Error| VolumeError::Api(e.to_string());
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(api_error)?
        .ok_or_else(|| VolumeError::Missing(format!("persistentvolumeclaim {name:?} not found")))?;
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(VolumeError::Missing(format!(
            "can't start pod because PVC {namespace}/{name} is being deleted"
        )));
    }
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume.is_empty() {
        return Err(VolumeError::Missing(format!(
            "PVC {namespace}/{name} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume:?})"
        )));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .map_err(api_error)?;
    let spec = pv.spec.unwrap_or_default();
    let Some(reference) = spec.claim_ref else {
        return Err(VolumeError::Missing(format!(
            "found PV object {volume:?} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"
        )));
    };
    if reference.uid != claim.metadata.uid {
        return Err(VolumeError::Missing(format!(
            "found PV object {volume:?} but its pv.Spec.ClaimRef.UID ({:?}) does not point to claim.UID ({:?})",
            reference.uid.unwrap_or_default(),
            claim.metadata.uid.unwrap_or_default()
        )));
    }
    if let Some(local) = spec.local {
        let path = PathBuf::from(&local.path);
        if !path.exists() {
            return Err(VolumeError::Missing(format!(
                "path {:?} does not exist",
                local.path
            )));
        }
        return Ok(path);
    }
    if let Some(host) = spec.host_path {
        let path = PathBuf::from(&host.path);
        if host.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&path)?;
        }
        return Ok(path);
    }
    Err(VolumeError::Unsupported(volume))
}

/// The volumes the pod mounts read-only whatever its containers say
/// (claims marked `readOnly`).
pub fn read_only(pod: &Pod) -> std::collections::HashSet<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true))
        })
        .map(|v| v.name.clone())
        .collect()
}

/// A ConfigMap or Secret whose keys become files: source, name, the items
/// to pick (all if None), optional.
type Keyed = (DataSource, String, Option<Vec<KeyToPath>>, Option<bool>);

/// A volume's defaultMode, 0644 unless set.
fn mode_or_default(mode: Option<i32>) -> u32 {
    mode.unwrap_or(0o644) as u32
}

/// Replaces the directory's contents with `files` (path → bytes, mode).
fn write_files(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for (path, (bytes, mode)) in files {
        if path.split('/').any(|part| part == "..") || path.starts_with('/') {
            continue;
        }
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))?;
    }
    Ok(())
}

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    match items {
        None => {
            for (k, v) in data {
                files.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| {
                    VolumeError::Missing(format!("{what}: key {:?} not found", item.key))
                })?;
                let m = item.mode.map(|m| m as u32).unwrap_or(mode);
                files.insert(item.path.clone(), (value.clone(), m));
            }
        }
    }
    Ok(())
}

/// The keys of a ConfigMap or Secret as files (all, or the listed items).
async fn keyed_files(
    client: &kube::Client,
    namespace: &str,
    source: (DataSource, &str, Option<&[KeyToPath]>, Option<bool>),
    mode: u32,
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    let (kind, name, items, optional) = source;
    match kind
        .data(client, namespace, name)
        .await
        .map_err(VolumeError::Api)?
    {
        Some(data) => select(
            data,
            items,
            mode,
            &format!("{} {name:?}", kind.kind()),
            files,
        ),
        None if optional == Some(true) => Ok(()),
        None => Err(VolumeError::Missing(kind.not_found(name))),
    }
}

fn downward_files(
    items: &[DownwardAPIVolumeFile],
    mode: u32,
    field: &(dyn Fn(&str) -> Option<String> + Sync),
    files: &mut BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field(&f.field_path)
        } else if let Some(r) = &item.resource_field_ref {
            field(&format!("resource:{}", r.resource))
        } else {
            None
        };
        let value = value.ok_or_else(|| {
            VolumeError::Missing(format!(
                "downward API file {:?}: unsupported field",
                item.path
            ))
        })?;
        let m = item.mode.map(|m| m as u32).unwrap_or(mode);
        files.insert(item.path.clone(), (value.into_bytes(), m));
    }
    Ok(())
}

/// A token bound to the pod, from the TokenRequest API.
async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    pod: &Pod,
    audience: Option<String>,
    expiration: i64,
) -> Result<String, VolumeError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {
            "audiences": audience.into_iter().collect::<Vec<_>>(),
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    }))
    .map_err(|e| VolumeError::Api(e.to_string()))?;
    let response: TokenRequest = api
        .create_subresource("token", service_account, &Default::default(), &request)
        .await
        .map_err(|e| {
            VolumeError::Api(format!(
                "requesting a token for service account {service_account:?}: {e}"
            ))
        })?;
    Ok(response.status.map(|s| s.token).unwrap_or_default())
}

/// The requested lifetime of each projected service-account token:
/// (volume, file path in it, audience, seconds).
fn projected_tokens(pod: &Pod) -> Vec<(String, String, Option<String>, i64)> {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut tokens = Vec::new();
    for volume in volumes {
        let sources = volume
            .projected
            .as_ref()
            .and_then(|p| p.sources.clone())
            .unwrap_or_default();
        for source in sources {
            if let Some(token) = source.service_account_token {
                tokens.push((
                    volume.name.clone(),
                    token.path,
                    token.audience,
                    token.expiration_seconds.unwrap_or(3607),
                ));
            }
        }
    }
    tokens
}

/// How long until the pod's projected tokens are due for refresh: 80% of
/// the shortest requested lifetime (upstream's kubelet also refreshes
/// after 24 h at the latest); None when the pod has none.
pub fn token_refresh_after(pod: &Pod) -> Option<std::time::Duration> {
    projected_tokens(pod)
        .iter()
        .map(|(_, _, _, seconds)| (*seconds * 8 / 10).clamp(1, 24 * 3600))
        .min()
        .map(|s| std::time::Duration::from_secs(s as u64))
}

/// Requests fresh tokens for the pod's projected volumes and replaces each
/// token file in place, so running containers read the new one.
pub async fn refresh_tokens(
    client: &kube::Client,
    pod: &Pod,
    data_dir: &Path,
) -> Result<(), VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let base = pod_dir(data_dir, &uid)
        .join("volumes")
        .join("kubernetes.io~projected");
    let modes: HashMap<String, u32> = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            (
                v.name,
                mode_or_default(v.projected.and_then(|p| p.default_mode)),
            )
        })
        .collect();
    for (volume, path, audience, seconds) in projected_tokens(pod) {
        let jwt =
            service_account_token(client, &namespace, &account, pod, audience, seconds).await?;
        let mode = modes.get(&volume).copied().unwrap_or(0o644);
        replace_file(&base.join(&volume), &path, jwt.as_bytes(), mode)?;
    }
    Ok(())
}

/// Writes `path` under `dir` through a temporary file and a rename: the
/// directory (what containers mount) stays, readers see old or new whole.
fn replace_file(dir: &Path, path: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if path.split('/').any(|part| part == "..") || path.starts_with('/') {
        return Ok(());
    }
    let target = dir.join(path);
    let temporary = target.with_file_name(format!(
        ".{}.tmp",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("token")
    ));
    std::fs::write(&temporary, bytes)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&temporary, &target)
}

/// Removes the pod's volume directories (host paths are left alone).
pub fn remove(data_dir: &Path, uid: &str) {
    let dir = pod_dir(data_dir, uid);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), err = %e, "removing pod volumes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_replace_the_directory_and_stay_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("v");
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), (b"1".to_vec(), 0o600));
        files.insert("sub/b".to_string(), (b"2".to_vec(), 0o644));
        files.insert("../escape".to_string(), (b"x".to_vec(), 0o644));
        write_files(&target, &files).unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read(target.join("sub/b")).unwrap(), b"2");
        assert!(!dir.path().join("escape").exists());
        let mode = std::fs::metadata(target.join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        files.remove("a");
        write_files(&target, &files).unwrap();
        assert!(!target.join("a").exists());
    }

    #[test]
    fn token_files_are_replaced_in_place_and_refreshed_at_80_percent() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), b"old").unwrap();
        let inode = std::fs::metadata(dir.path()).unwrap().ino();
        replace_file(dir.path(), "token", b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(dir.path().join("token")).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().ino(),
            inode,
            "the mounted directory stays"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        replace_file(dir.path(), "../escape", b"x", 0o644).unwrap();
        assert!(!dir.path().parent().unwrap().join("escape").exists());

        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "volumes": [
            {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
            {"name": "vault", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault", "expirationSeconds": 600}}]}},
        ]}}))
        .unwrap();
        assert_eq!(
            token_refresh_after(&pod),
            Some(std::time::Duration::from_secs(480))
        );
        let none: Pod = serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(token_refresh_after(&none), None);
    }

    #[test]
    fn items_pick_keys_and_missing_keys_are_errors() {
        let data = BTreeMap::from([("k".to_string(), b"v".to_vec())]);
        let mut files = BTreeMap::new();
        let items = [KeyToPath {
            key: "k".into(),
            path: "renamed".into(),
            mode: None,
        }];
        select(data.clone(), Some(&items), 0o644, "cm", &mut files).unwrap();
        assert_eq!(files["renamed"].0, b"v");
        let bad = [KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(select(data, Some(&bad), 0o644, "cm", &mut files).is_err());
    }
}
