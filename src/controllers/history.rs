//! Template history for DaemonSets and StatefulSets: one ControllerRevision
//! per pod template, numbered as `kubectl rollout history` lists them and
//! holding the patch `kubectl rollout undo` applies; the template hash names
//! revisions (and ReplicaSets) and labels pods.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::Error;

/// The label naming the revision a DaemonSet's or StatefulSet's pod was made from.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// A hash of `value` as upstream renders template hashes: FNV-1a (with the
/// collision count) in decimal, spelled in an alphabet without vowels.
pub fn hash(value: &impl serde::Serialize, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(value).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// What a revision stores: the patch that puts `template` back.
pub fn data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_default();
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// A revision's number.
pub fn number(revision: &ControllerRevision) -> i64 {
    revision.revision
}

/// The revisions of one owner and which is current.
pub struct History {
    /// The revision of the current template.
    pub current: ControllerRevision,
    /// All of the owner's revisions, oldest first (current included).
    pub all: Vec<ControllerRevision>,
}

/// Finds or records the revision of `template` for `owner`: an older
/// revision with the same template becomes the newest (as after `rollout
/// undo`); otherwise a new one is made, numbered after the others. The
/// owner's revisions come from the shared cache (orphans its selector
/// matches are adopted).
pub async fn record(
    api: &Api<ControllerRevision>,
    owner: &OwnerReference,
    namespace: &str,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    informers: &crate::runtime::Informers,
) -> Result<History, Error> {
    let cached = informers.informer::<ControllerRevision>();
    if !cached.filled() {
        return Err(Error::Waiting(
            "the revisions' cache is not filled yet".into(),
        ));
    }
    let candidates = super::selected(&cached, namespace, selector);
    let mut all = super::claim_from(api, candidates, owner).await;
    all.sort_by_key(number);
    let wanted = data(template);
    let newest = all.iter().map(number).max().unwrap_or(0);
    let found = all
        .iter()
        .position(|r| r.data.as_ref().map(|d| &d.0) == Some(&wanted));
    let current = match found {
        Some(i) if number(&all[i]) == newest => all[i].clone(),
        Some(i) => {
            let patch = json!({"revision": newest + 1});
            let bumped = api
                .patch(
                    &all[i].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            all[i] = bumped.clone();
            bumped
        }
        None => {
            let hash = hash(&wanted, collision_count);
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.clone());
            let revision = ControllerRevision {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("{}-{hash}", owner.name)),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(wanted)),
                revision: newest + 1,
            };
            let created = match api.create(&PostParams::default(), &revision).await {
                Ok(created) => created,
                Err(e) if crate::runtime::already_exists(&e) => {
                    api.get(&format!("{}-{hash}", owner.name)).await?
                }
                Err(e) => return Err(e.into()),
            };
            all.push(created.clone());
            created
        }
    };
    all.sort_by_key(number);
    Ok(History { current, all })
}

/// The hash label of a revision (what its pods carry).
pub fn hash_of(revision: &ControllerRevision) -> String {
    revision
        .labels()
        .get(REVISION_HASH)
        .cloned()
        .unwrap_or_default()
}

/// Deletes the oldest revisions beyond `limit` that no pod uses.
pub async fn trim(api: &Api<ControllerRevision>, history: &History, in_use: &[String], limit: i32) {
    let old: Vec<&ControllerRevision> = history
        .all
        .iter()
        .filter(|r| r.name_any() != history.current.name_any())
        .filter(|r| !in_use.contains(&hash_of(r)))
        .collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    for revision in old.into_iter().take(excess) {
        let _ = api
            .delete(&revision.name_any(), &DeleteParams::background())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_hold_a_replacing_template_patch() {
        let template: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "a"}]}}))
                .unwrap();
        let d = data(&template);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "a");
    }

    #[test]
    fn hashes_differ_by_value_and_collision_count() {
        let h = hash(&json!({"a": 1}), None);
        assert_eq!(h, hash(&json!({"a": 1}), None));
        assert_ne!(h, hash(&json!({"a": 2}), None));
        assert_ne!(h, hash(&json!({"a": 1}), Some(1)));
        assert!(
            h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
    }
}
