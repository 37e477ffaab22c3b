//! Add-on manifests (k3s's deploy controller): the YAML/JSON files under
//! `<data-dir>/server/manifests/` (subdirectories included) are applied at
//! start and whenever their content changes.
//!
//! The directory is polled every [`POLL`] and each file's SHA-256 compared,
//! as k3s does: no extra dependency, works the same for editors that write
//! in place or rename over, on any filesystem, and the add-on directory is a
//! handful of small files. Each document is applied with server-side apply
//! (field manager [`FIELD_MANAGER`], forced), its resource found by
//! discovery. Each file is recorded as an `Addon` (`addons.kelp.io/v1`, the
//! CRD is registered at start) in `kube-system`, named after the file's base
//! name without extension, with `spec.source` (the path) and `spec.checksum`
//! (what was last applied successfully): an unchanged file is not applied
//! again, not even after a restart. `NAME.yaml.skip` next to `NAME.yaml`
//! keeps it from being applied. A file that fails is logged once per content
//! and gets a `Warning ApplyManifestFailed` event on its Addon, and is tried
//! again with back-off; the other files go on. Deleting a file leaves what it
//! created (as k3s).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::runtime::{Backoff, Shutdown};

/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_secs(2);
/// The server-side apply field manager of add-on objects.
pub const FIELD_MANAGER: &str = "kelp-addons";
/// Where Addon records live.
pub const NAMESPACE: &str = "kube-system";
/// Longest wait before a failed file is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The record of one manifest file (`addons.kelp.io/v1` `Addon`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Addon {
    /// Name (the file's base name) and namespace (`kube-system`).
    pub metadata: ObjectMeta,
    /// What was applied.
    #[serde(default)]
    pub spec: AddonSpec,
}

/// `Addon.spec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AddonSpec {
    /// The manifest file.
    #[serde(default)]
    pub source: String,
    /// SHA-256 of the content last applied without error.
    #[serde(default)]
    pub checksum: String,
}

impl kube::Resource for Addon {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;
    fn kind(_: &()) -> Cow<'_, str> {
        "Addon".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "kelp.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "addons".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The `addons.kelp.io` CustomResourceDefinition.
pub fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "addons.kelp.io"},
        "spec": {
            "group": "kelp.io",
            "scope": "Namespaced",
            "names": {"plural": "addons", "singular": "addon", "kind": "Addon", "listKind": "AddonList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "source": {"type": "string"},
                        "checksum": {"type": "string"},
                    }},
                }}},
                "additionalPrinterColumns": [
                    {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    })
}

/// Whether `path` names a manifest by its extension.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The manifest files under `dir` (recursively), sorted, less those with a
/// `.skip` file beside them.
pub fn scan(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if is_manifest(&path) && path.is_file() && !skipped(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Whether `NAME.yaml.skip` exists for `NAME.yaml`.
pub fn skipped(path: &Path) -> bool {
    let mut skip = path.as_os_str().to_owned();
    skip.push(".skip");
    Path::new(&skip).exists()
}

/// The Addon name of a file: its base name without the extension.
pub fn addon_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Hex SHA-256 of a file's content.
pub fn checksum(content: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(content))
}

/// The objects of a manifest: every non-empty YAML document (JSON is YAML),
/// a `List`'s items in its place.
pub fn documents(text: &str) -> Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(document).map_err(|e| anyhow!("document {}: {e}", index + 1))?;
        match value {
            Value::Null => {}
            Value::Object(ref map) => {
                let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
                if kind.ends_with("List") && map.contains_key("items") {
                    let items = map.get("items").and_then(Value::as_array).cloned();
                    objects.extend(items.unwrap_or_default());
                } else {
                    objects.push(value);
                }
            }
            _ => bail!("document {}: not an object", index + 1),
        }
    }
    for (index, object) in objects.iter().enumerate() {
        for field in ["apiVersion", "kind"] {
            if object
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                bail!("object {}: no {field}", index + 1);
            }
        }
        if object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            bail!("object {}: no metadata.name", index + 1);
        }
    }
    Ok(objects)
}

/// What the loop remembers of a file between polls.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    /// This content is applied (or recorded as applied).
    Applied(String),
    /// This content failed; it is tried again after the file's back-off.
    Failed(String),
}

/// Registers the Addon CRD, then applies the manifests under `dir` until
/// `shutdown` (k3s's deploy controller). `client` should be privileged
/// (manifests may hold anything).
pub async fn run(client: kube::Client, dir: PathBuf, shutdown: Shutdown) -> anyhow::Result<()> {
    shutdown.until(apply_forever(client, dir)).await;
    Ok(())
}

/// Applies the manifests under `dir` until dropped.
async fn apply_forever(client: kube::Client, dir: PathBuf) {
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let params = PatchParams::apply(FIELD_MANAGER).force();
    while let Err(e) = crds
        .patch("addons.kelp.io", &params, &Patch::Apply(crd()))
        .await
    {
        tracing::warn!(err = %e, "registering the Addon CRD; retrying");
        tokio::time::sleep(POLL).await;
    }
    let recorder = crate::telemetry::events::Recorder::new(client.clone(), "deploy", None);
    let mut known: HashMap<PathBuf, Known> = HashMap::new();
    let mut backoff: Backoff<PathBuf> = Backoff::new(POLL, MAX_BACKOFF);
    loop {
        for path in scan(&dir) {
            let Ok(content) = std::fs::read(&path) else {
                continue;
            };
            let sum = checksum(&content);
            match known.get(&path) {
                Some(Known::Applied(done)) if *done == sum => continue,
                Some(Known::Failed(checksum))
                    if *checksum == sum && backoff.left(&path, Instant::now()).is_some() =>
                {
                    continue;
                }
                _ => {}
            }
            let previous = known.remove(&path);
            let outcome = sync(&client, &recorder, &path, &content, &sum).await;
            let state = match outcome {
                Ok(()) => {
                    backoff.reset(&path);
                    Known::Applied(sum)
                }
                Err(e) => {
                    if previous != Some(Known::Failed(sum.clone())) {
                        tracing::error!(file = %path.display(), err = %format!("{e:#}"), "applying add-on manifest");
                        backoff.reset(&path);
                    }
                    let retry_in = backoff.step(&path, Instant::now());
                    tracing::debug!(file = %path.display(), err = %format!("{e:#}"), ?retry_in, "add-on manifest failed");
                    Known::Failed(sum)
                }
            };
            known.insert(path, state);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Applies one file unless its Addon records this checksum; records it.
async fn sync(
    client: &kube::Client,
    recorder: &crate::telemetry::events::Recorder,
    path: &Path,
    content: &[u8],
    sum: &str,
) -> Result<()> {
    let name = addon_name(path);
    let addons: Api<Addon> = Api::namespaced(client.clone(), NAMESPACE);
    let record = addons.get_opt(&name).await.context("reading the Addon")?;
    if record.as_ref().is_some_and(|a| a.spec.checksum == sum) {
        tracing::debug!(file = %path.display(), "add-on unchanged since it was applied");
        return Ok(());
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let source = path.display().to_string();
    // The record exists before the objects, so failures can be reported on it.
    let record = match record {
        Some(record) => record,
        None => {
            let body = json!({
                "apiVersion": "kelp.io/v1", "kind": "Addon",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"source": source},
            });
            addons
                .patch(&name, &params, &Patch::Apply(body))
                .await
                .with_context(|| format!("recording Addon {name:?}"))?
        }
    };
    let applied = apply_all(client, content).await;
    match &applied {
        Ok(count) => {
            let body = json!({
                "apiVersion": "kelp.io/v1", "kind": "Addon",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"source": source, "checksum": sum},
            });
            addons
                .patch(&name, &params, &Patch::Apply(body))
                .await
                .with_context(|| format!("recording Addon {name:?}"))?;
            tracing::info!(file = %path.display(), objects = count, "applied add-on manifest");
            recorder
                .record(
                    &record,
                    "Normal",
                    "AppliedManifest",
                    &format!("Applied manifest at {source:?}"),
                )
                .await;
        }
        Err(e) => {
            recorder
                .record(
                    &record,
                    "Warning",
                    "ApplyManifestFailed",
                    &format!("Applying manifest at {source:?} failed: {e:#}"),
                )
                .await;
        }
    }
    applied.map(|_| ())
}

/// Applies every object of a manifest, in order; all are tried, the first
/// error is returned. Returns how many were applied.
async fn apply_all(client: &kube::Client, content: &[u8]) -> Result<usize> {
    let text = std::str::from_utf8(content).context("not UTF-8")?;
    let objects = documents(text)?;
    let mut first_error = None;
    let mut count = 0;
    for object in objects {
        match apply(client, object).await {
            Ok(()) => count += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(count),
    }
}

/// Server-side applies one object, its resource found by discovery.
async fn apply(client: &kube::Client, object: Value) -> Result<()> {
    let types: TypeMeta = serde_json::from_value(object.clone())?;
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let label = format!("{} {name:?}", types.kind);
    let gvk = GroupVersionKind::try_from(&types).with_context(|| label.clone())?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("{label}: no {} in {}", types.kind, types.api_version))?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| label)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_lists_and_json_are_objects() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# empty\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n- {apiVersion: v1, kind: Service, metadata: {name: c}}\n";
        let objects = documents(text).unwrap();
        let names: Vec<_> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let json = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}"#;
        assert_eq!(documents(json).unwrap()[0]["kind"], "Namespace");
        assert!(documents("").unwrap().is_empty());
    }

    #[test]
    fn broken_manifests_are_errors() {
        assert!(documents("kind: [").is_err());
        assert!(documents("- a\n").is_err());
        let e = documents("apiVersion: v1\nmetadata: {name: a}\n").unwrap_err();
        assert_eq!(e.to_string(), "object 1: no kind");
        let e = documents("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert_eq!(e.to_string(), "object 1: no metadata.name");
    }

    #[test]
    fn scan_finds_manifests_and_honours_skip_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        };
        for name in [
            "b.yaml",
            "a.yml",
            "c.json",
            "notes.txt",
            "skipped.yaml",
            "skipped.yaml.skip",
            "sub/d.yaml",
        ] {
            write(name);
        }
        let found: Vec<_> = scan(dir.path())
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(found, ["a.yml", "b.yaml", "c.json", "sub/d.yaml"]);
        assert!(scan(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn names_and_checksums() {
        assert_eq!(addon_name(Path::new("/m/traefik.yaml")), "traefik");
        assert_eq!(addon_name(Path::new("/m/x.y.json")), "x.y");
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
