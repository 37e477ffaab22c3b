//! The API Priority and Fairness configuration objects kept in the store:
//! upstream's post-start hook `apiserver/bootstrap-system-flowcontrol-configuration`
//! (the "ensurer": suggested and mandatory objects created, kept or
//! restored, unwanted ones removed) and the FlowSchemas' `Dangling`
//! condition the config consumer writes.
//!
//! Decisions are pure ([`plan`], [`dangling_status`]); the functions that
//! read and write the store are thin and go through the handlers' create
//! and update paths, so defaults, validation, admission and managed fields
//! apply as for any client.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::registry::strategy::flowcontrol as boot;
use crate::api::{ApiError, values::meta};
use crate::apiserver::ApiState;
use crate::apiserver::handlers::{self, Request};
use crate::apiserver::request::Query;

const GROUP: &str = "flowcontrol.apiserver.k8s.io";
const FLOW_SCHEMAS: &str = "flowschemas";
const PRIORITY_LEVELS: &str = "prioritylevelconfigurations";
const PRIORITY_LEVEL_KIND: &str = "PriorityLevelConfiguration";

/// The field manager of the ensurer's writes.
pub const PRODUCER_FIELD_MANAGER: &str = "api-priority-and-fairness-config-producer-v1";
/// The field manager of the FlowSchema status writes.
pub const CONSUMER_FIELD_MANAGER: &str = "api-priority-and-fairness-config-consumer-v1";

/// The FlowSchema condition type saying whether its priority level exists.
pub const DANGLING: &str = "Dangling";

/// Go's `strconv.ParseBool`: None for anything it refuses.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The auto-update annotation's value, if present as a string.
fn annotation(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(boot::AUTOUPDATE_ANNOTATION))
        .and_then(Value::as_str)
}

/// What one pass does with one bootstrap object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Not stored: create the bootstrap object.
    Create,
    /// Stored and as it should be.
    Keep,
    /// Stored; write this revision of it (spec replaced and/or annotation set).
    Update(Value),
}

/// Upstream's `ReviseIfNeeded` for `bootstrap` against the stored `current`.
/// Mandatory objects always follow their bootstrap spec; a suggested one
/// follows it when its annotation parses true, or, when the annotation is
/// missing or unparseable, while `metadata.generation` is 1 (never edited).
/// The annotation is rewritten as `"true"`/`"false"` unless it already parses
/// to the decision.
pub fn plan(current: Option<&Value>, bootstrap: &Value, mandatory: bool) -> Action {
    let Some(current) = current else {
        return Action::Create;
    };
    let parsed = annotation(current).and_then(parse_bool);
    let auto_update = mandatory
        || parsed.unwrap_or_else(|| current.pointer("/metadata/generation") == Some(&json!(1)));
    let update_annotation = parsed != Some(auto_update);
    let spec_changed = auto_update && !spec_equalish(bootstrap, current);
    if !update_annotation && !spec_changed {
        return Action::Keep;
    }
    let mut revised = current.clone();
    if spec_changed {
        revised["spec"] = bootstrap["spec"].clone();
    }
    if update_annotation {
        let metadata = meta::metadata_mut(&mut revised);
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if !annotations.is_object() {
            *annotations = json!({});
        }
        annotations[boot::AUTOUPDATE_ANNOTATION] = json!(auto_update.to_string());
    }
    Action::Update(revised)
}

/// Upstream's `specEqualish`: the defaulted bootstrap spec against the stored
/// one; for the `exempt` level, the stored `spec.exempt` values count as
/// expected (it must be there, though).
fn spec_equalish(bootstrap: &Value, current: &Value) -> bool {
    let kind = bootstrap["kind"].as_str().unwrap_or("");
    let mut want = boot::comparable_spec(kind, &bootstrap["spec"]);
    let have = boot::comparable_spec(kind, &current["spec"]);
    if kind == PRIORITY_LEVEL_KIND && meta::name(bootstrap) == "exempt" {
        let Some(exempt) = have.get("exempt").filter(|e| e.is_object()) else {
            return false;
        };
        for field in ["nominalConcurrencyShares", "lendablePercent"] {
            match exempt.get(field) {
                Some(v) => want["exempt"][field] = v.clone(),
                None => {
                    if let Some(map) = want["exempt"].as_object_mut() {
                        map.remove(field);
                    }
                }
            }
        }
    }
    want == have
}

/// What one [`ensure`] pass changed, as `resource/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ensured {
    /// Bootstrap objects created (missing before).
    pub created: Vec<String>,
    /// Objects whose spec or annotation was rewritten.
    pub updated: Vec<String>,
    /// Unwanted objects removed (or marked for deletion when they have finalizers).
    pub deleted: Vec<String>,
}

impl Ensured {
    fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

/// A request as the API server itself, with `manager` as field manager.
fn request(
    state: &ApiState,
    resource: &str,
    name: Option<&str>,
    manager: &str,
) -> Result<Request, ApiError> {
    let mut req = handlers::system_request(state, GROUP, resource, None, name)
        .ok_or_else(|| ApiError::internal(format!("{resource}.{GROUP} is not served")))?;
    req.query = Query::parse(Some(&format!("fieldManager={manager}")));
    Ok(req)
}

/// One pass of the ensurer: suggested levels and schemas, mandatory levels
/// and schemas, then removal of the objects annotated for auto-update that
/// are no longer bootstrap objects. Stops at the first error (the caller
/// retries); update conflicts are logged and left to the next pass.
pub async fn ensure(state: &ApiState) -> Result<Ensured, ApiError> {
    let mut done = Ensured::default();
    let passes = [
        (PRIORITY_LEVELS, boot::suggested_priority_levels(), false),
        (FLOW_SCHEMAS, boot::suggested_flow_schemas(), false),
        (PRIORITY_LEVELS, boot::mandatory_priority_levels(), true),
        (FLOW_SCHEMAS, boot::mandatory_flow_schemas(), true),
    ];
    for (resource, objects, mandatory) in &passes {
        for bootstrap in objects {
            ensure_one(state, resource, bootstrap, *mandatory, &mut done).await?;
        }
    }
    for resource in [FLOW_SCHEMAS, PRIORITY_LEVELS] {
        let wanted: HashSet<&str> = passes
            .iter()
            .filter(|(r, _, _)| *r == resource)
            .flat_map(|(_, objects, _)| objects.iter().map(meta::name))
            .collect();
        remove_unwanted(state, resource, &wanted, &mut done).await?;
    }
    Ok(done)
}

async fn ensure_one(
    state: &ApiState,
    resource: &str,
    bootstrap: &Value,
    mandatory: bool,
    done: &mut Ensured,
) -> Result<(), ApiError> {
    let name = meta::name(bootstrap);
    let req = request(state, resource, Some(name), PRODUCER_FIELD_MANAGER)?;
    let shown = format!("{resource}/{name}");
    // A create that finds the object created meanwhile reads it again.
    for _ in 0..5 {
        let current = match handlers::load(state, &req).await {
            Ok(found) => Some(found),
            Err(ApiError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        match plan(current.as_ref().map(|(obj, _)| obj), bootstrap, mandatory) {
            Action::Keep => return Ok(()),
            Action::Create => {
                let mut obj = bootstrap.clone();
                match handlers::create::create_object(state, &req, &mut obj).await {
                    Ok(_) => {
                        tracing::info!(object = %shown, mandatory, "created the APF bootstrap object");
                        done.created.push(shown);
                        return Ok(());
                    }
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Action::Update(revised) => {
                let Some((old, kv)) = current else {
                    return Ok(());
                };
                return match handlers::update::write_update(
                    state,
                    &req,
                    revised,
                    &old,
                    kv.mod_revision,
                    false,
                )
                .await
                {
                    Ok(_) => {
                        tracing::info!(object = %shown, mandatory, "updated the APF bootstrap object");
                        done.updated.push(shown);
                        Ok(())
                    }
                    Err(ApiError::Conflict { .. }) => {
                        tracing::info!(object = %shown, "APF object updated concurrently; the next pass checks it again");
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
            }
        }
    }
    Ok(())
}

/// The stored objects of `resource` with their revisions.
async fn list(state: &ApiState, resource: &str) -> Result<Vec<(Value, i64)>, ApiError> {
    let req = request(state, resource, None, PRODUCER_FIELD_MANAGER)?;
    let page = state
        .store
        .list(&req.rt.key_prefix(None), None, 0)
        .await
        .map_err(|e| handlers::store_error(&req, e))?;
    page.items
        .iter()
        .map(|kv| Ok((handlers::decode_stored(&req.rt, kv)?, kv.mod_revision)))
        .collect()
}

/// Upstream's `RemoveUnwantedObjects`: deletes each object not in `wanted`
/// whose annotation parses true (a missing, unparseable or false one keeps it).
async fn remove_unwanted(
    state: &ApiState,
    resource: &str,
    wanted: &HashSet<&str>,
    done: &mut Ensured,
) -> Result<(), ApiError> {
    for (obj, revision) in list(state, resource).await? {
        let name = meta::name(&obj);
        if wanted.contains(name) || annotation(&obj).and_then(parse_bool) != Some(true) {
            continue;
        }
        let req = request(state, resource, Some(name), PRODUCER_FIELD_MANAGER)?;
        let shown = format!("{resource}/{name}");
        let at_revision = handlers::delete::DeleteOptions::at_revision(revision);
        match handlers::delete::delete_one(state, &req, &at_revision).await {
            Ok(_) => {
                tracing::info!(object = %shown, "deleted the unwanted APF object");
                done.deleted.push(shown);
            }
            Err(ApiError::NotFound { .. }) => {}
            Err(ApiError::Conflict { .. }) => {
                tracing::info!(object = %shown, "unwanted APF object changed concurrently; the next pass checks it again");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The ensurer for the life of the server: [`ensure`] every second until a
/// pass succeeds, then every minute; errors are logged. (Upstream gives the
/// first success 5 minutes before failing its post-start hook; kelp keeps
/// trying.)
pub async fn run(state: Arc<ApiState>) {
    loop {
        match ensure(&state).await {
            Ok(done) => {
                log_pass(&done);
                break;
            }
            Err(e) => {
                tracing::error!(err = %e, "APF bootstrap ensurer ran into an error, will retry in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        match ensure(&state).await {
            Ok(done) => log_pass(&done),
            Err(e) => {
                tracing::error!(err = %e, "APF bootstrap ensurer ran into an error, will retry in 1m")
            }
        }
    }
}

fn log_pass(done: &Ensured) {
    if !done.is_empty() {
        tracing::info!(
            created = done.created.len(),
            updated = done.updated.len(),
            deleted = done.deleted.len(),
            "ensured the APF bootstrap configuration"
        );
    }
}

/// Whether the consumer can use a stored priority level: upstream's union
/// checks (`type` Limited exactly when `limited` is set, Exempt exactly when
/// `exempt` is set and the name is `exempt`; `Reject` exactly when no
/// `queuing`). A level failing them counts as missing for `Dangling`.
pub fn priority_level_is_usable(level: &Value) -> bool {
    let spec = &level["spec"];
    let kind = spec["type"].as_str().unwrap_or("");
    let limited = &spec["limited"];
    let has_limited = !limited.is_null();
    let has_exempt = !spec["exempt"].is_null();
    let response = &limited["limitResponse"];
    let rejects = response["type"].as_str() == Some("Reject");
    (kind == "Limited") == has_limited
        && (kind == "Exempt") == has_exempt
        && (kind == "Exempt") == (meta::name(level) == "exempt")
        && (!has_limited || rejects == response["queuing"].is_null())
}

/// The `status` `fs` should have given the usable priority levels `levels`,
/// or None when its `Dangling` condition already says so. The condition's
/// `lastTransitionTime` becomes `now` whenever status, reason or message
/// change; other conditions stay.
pub fn dangling_status(fs: &Value, levels: &HashSet<String>, now: &str) -> Option<Value> {
    let level = fs
        .pointer("/spec/priorityLevelConfiguration/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (status, reason, message) = if levels.contains(level) {
        (
            "False",
            "Found",
            format!(
                "This FlowSchema references the PriorityLevelConfiguration object named \"{level}\" and it exists"
            ),
        )
    } else {
        (
            "True",
            "NotFound",
            format!(
                "This FlowSchema references the PriorityLevelConfiguration object named \"{level}\" but there is no such object"
            ),
        )
    };
    let mut conditions = fs
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let existing = conditions.iter().position(|c| c["type"] == DANGLING);
    if let Some(i) = existing {
        let c = &conditions[i];
        if c["status"] == status && c["reason"] == reason && c["message"] == message.as_str() {
            return None;
        }
    }
    let condition = json!({
        "type": DANGLING,
        "status": status,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    });
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
    let mut status = fs
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    status["conditions"] = Value::Array(conditions);
    Some(status)
}

/// Brings every stored FlowSchema's `Dangling` condition up to date with
/// the stored priority levels, writing the status subresource (field manager
/// `api-priority-and-fairness-config-consumer-v1`) only where the condition
/// changes. Upstream limits each FlowSchema to 5 such writes a minute and
/// defers the rest by 30–74 s; kelp does not (a FlowSchema is only written
/// when its condition changes, so a write loop needs someone flipping its
/// level in and out of existence). Conflicts and schemas deleted meanwhile
/// are skipped; the next call sees them again.
pub async fn sync_status(state: &ApiState) -> Result<(), ApiError> {
    let levels: HashSet<String> = list(state, PRIORITY_LEVELS)
        .await?
        .iter()
        .filter(|(level, _)| priority_level_is_usable(level))
        .map(|(level, _)| meta::name(level).to_string())
        .collect();
    let now = meta::now();
    for (fs, revision) in list(state, FLOW_SCHEMAS).await? {
        let Some(status) = dangling_status(&fs, &levels, &now) else {
            continue;
        };
        let name = meta::name(&fs);
        let mut req = request(state, FLOW_SCHEMAS, Some(name), CONSUMER_FIELD_MANAGER)?;
        req.path.subresource = Some("status".into());
        let mut new = fs.clone();
        new["status"] = status;
        match handlers::update::write_update(state, &req, new, &fs, revision, true).await {
            Ok(_) => {}
            Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => {
                tracing::debug!(
                    flowschema = name,
                    "FlowSchema changed meanwhile; its status waits for the next sync"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(objects: Vec<Value>, name: &str) -> Value {
        objects
            .into_iter()
            .find(|o| meta::name(o) == name)
            .expect("bootstrap object")
    }

    /// A bootstrap object as the store would hold it.
    fn stored(mut obj: Value, generation: i64) -> Value {
        obj["metadata"]["generation"] = json!(generation);
        obj["metadata"]["uid"] = json!("u");
        obj
    }

    fn annotated(mut obj: Value, value: Option<&str>) -> Value {
        match value {
            Some(v) => obj["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION] = json!(v),
            None => {
                obj["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("annotations");
            }
        }
        obj
    }

    #[test]
    fn parse_bool_is_gos() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", " true", "2"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn missing_objects_are_created() {
        let system = named(boot::suggested_priority_levels(), "system");
        assert_eq!(plan(None, &system, false), Action::Create);
        let exempt = named(boot::mandatory_flow_schemas(), "exempt");
        assert_eq!(plan(None, &exempt, true), Action::Create);
    }

    #[test]
    fn unchanged_objects_are_kept() {
        for (objects, mandatory) in [
            (boot::suggested_priority_levels(), false),
            (boot::suggested_flow_schemas(), false),
            (boot::mandatory_priority_levels(), true),
            (boot::mandatory_flow_schemas(), true),
        ] {
            for obj in objects {
                let current = stored(obj.clone(), 3);
                assert_eq!(
                    plan(Some(&current), &obj, mandatory),
                    Action::Keep,
                    "{}",
                    meta::name(&obj)
                );
            }
        }
    }

    #[test]
    fn suggested_spec_follows_the_annotation() {
        let boot_obj = named(boot::suggested_priority_levels(), "workload-low");
        let mut edited = stored(boot_obj.clone(), 2);
        edited["spec"]["limited"]["nominalConcurrencyShares"] = json!(7);

        // "true" (any spelling ParseBool takes): spec restored, annotation kept as is.
        let current = annotated(edited.clone(), Some("T"));
        let Action::Update(revised) = plan(Some(&current), &boot_obj, false) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], boot_obj["spec"]);
        assert_eq!(
            revised["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "T"
        );

        // "false": left alone.
        let current = annotated(edited.clone(), Some("false"));
        assert_eq!(plan(Some(&current), &boot_obj, false), Action::Keep);

        // Missing, generation 2 (edited): spec kept, annotation set to "false".
        let current = annotated(edited.clone(), None);
        let Action::Update(revised) = plan(Some(&current), &boot_obj, false) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], edited["spec"]);
        assert_eq!(
            revised["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "false"
        );

        // Unparseable, generation 1 (never edited): spec restored, annotation "true".
        let mut fresh = annotated(edited.clone(), Some("yes"));
        fresh["metadata"]["generation"] = json!(1);
        let Action::Update(revised) = plan(Some(&fresh), &boot_obj, false) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], boot_obj["spec"]);
        assert_eq!(
            revised["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "true"
        );
        assert_eq!(revised["metadata"]["uid"], "u");
    }

    #[test]
    fn mandatory_objects_are_always_restored_and_annotated_true() {
        let boot_obj = named(boot::mandatory_flow_schemas(), "catch-all");
        let mut current = annotated(stored(boot_obj.clone(), 4), Some("false"));
        current["spec"]["matchingPrecedence"] = json!(9999);
        let Action::Update(revised) = plan(Some(&current), &boot_obj, true) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], boot_obj["spec"]);
        assert_eq!(
            revised["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "true"
        );

        // Only the annotation is wrong: only it changes.
        let current = annotated(stored(boot_obj.clone(), 4), None);
        let Action::Update(revised) = plan(Some(&current), &boot_obj, true) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], boot_obj["spec"]);
        assert_eq!(
            revised["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "true"
        );
    }

    #[test]
    fn exempt_level_keeps_its_exempt_values_but_not_a_missing_exempt() {
        let boot_obj = named(boot::mandatory_priority_levels(), "exempt");
        let mut current = stored(boot_obj.clone(), 2);
        current["spec"]["exempt"] = json!({"nominalConcurrencyShares": 10, "lendablePercent": 20});
        assert_eq!(plan(Some(&current), &boot_obj, true), Action::Keep);
        current["spec"] = json!({"type": "Exempt"});
        let Action::Update(revised) = plan(Some(&current), &boot_obj, true) else {
            panic!("expected an update");
        };
        assert_eq!(revised["spec"], boot_obj["spec"]);
    }

    #[test]
    fn spec_comparison_ignores_what_go_cannot_tell_from_absent() {
        let boot_obj = named(boot::suggested_flow_schemas(), "system-leader-election");
        let mut current = stored(boot_obj.clone(), 2);
        current["spec"]["rules"][0]["resourceRules"][0]["clusterScope"] = json!(false);
        current["spec"]["rules"][0]["nonResourceRules"] = json!([]);
        assert_eq!(plan(Some(&current), &boot_obj, false), Action::Keep);
    }

    #[test]
    fn usable_levels_pass_the_union_checks() {
        for level in [
            boot::mandatory_priority_levels(),
            boot::suggested_priority_levels(),
        ]
        .concat()
        {
            assert!(priority_level_is_usable(&level), "{}", meta::name(&level));
        }
        let bare_exempt = json!({"metadata": {"name": "exempt"}, "spec": {"type": "Exempt"}});
        assert!(!priority_level_is_usable(&bare_exempt));
        let exempt_elsewhere =
            json!({"metadata": {"name": "x"}, "spec": {"type": "Exempt", "exempt": {}}});
        assert!(!priority_level_is_usable(&exempt_elsewhere));
        let reject_with_queuing = json!({"metadata": {"name": "x"}, "spec": {"type": "Limited",
            "limited": {"limitResponse": {"type": "Reject", "queuing": {}}}}});
        assert!(!priority_level_is_usable(&reject_with_queuing));
    }

    #[test]
    fn dangling_condition_changes_only_when_it_says_something_new() {
        let levels: HashSet<String> = ["system".to_string()].into();
        let mut fs = named(boot::suggested_flow_schemas(), "system-nodes");
        fs["status"] = json!({"conditions": [{"type": "Other", "status": "True"}]});

        let status =
            dangling_status(&fs, &levels, "2025-01-01T00:00:00Z").expect("a new condition");
        assert_eq!(
            status["conditions"],
            json!([
                {"type": "Other", "status": "True"},
                {
                    "type": "Dangling",
                    "status": "False",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "reason": "Found",
                    "message": "This FlowSchema references the PriorityLevelConfiguration object named \"system\" and it exists",
                },
            ])
        );
        fs["status"] = status;
        assert_eq!(dangling_status(&fs, &levels, "2025-01-02T00:00:00Z"), None);

        let status =
            dangling_status(&fs, &HashSet::new(), "2025-01-03T00:00:00Z").expect("dangling now");
        let dangling = &status["conditions"][1];
        assert_eq!(dangling["status"], "True");
        assert_eq!(dangling["reason"], "NotFound");
        assert_eq!(dangling["lastTransitionTime"], "2025-01-03T00:00:00Z");
        assert_eq!(
            dangling["message"],
            "This FlowSchema references the PriorityLevelConfiguration object named \"system\" but there is no such object"
        );
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(2));
    }

    async fn get(state: &ApiState, resource: &str, name: &str) -> Option<Value> {
        let req = request(state, resource, Some(name), "test").expect("request");
        match handlers::load(state, &req).await {
            Ok((obj, _)) => Some(obj),
            Err(ApiError::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    async fn put(state: &ApiState, resource: &str, obj: Value) {
        let req = request(state, resource, Some(meta::name(&obj)), "test").expect("request");
        let (old, kv) = handlers::load(state, &req).await.expect("stored");
        handlers::update::write_update(state, &req, obj, &old, kv.mod_revision, false)
            .await
            .expect("update");
    }

    async fn remove(state: &ApiState, resource: &str, name: &str) {
        let req = request(state, resource, Some(name), "test").expect("request");
        state.store.delete(&req.key(), None).await.expect("delete");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ensure_keeps_the_store_in_line() {
        let dir = tempfile::tempdir().expect("dir");
        let state = crate::apiserver::tests::state(dir.path());
        let total_levels = 8;
        let total_schemas = 13;

        // A fresh store gets every bootstrap object.
        let done = ensure(&state).await.expect("first pass");
        assert_eq!(done.created.len(), total_levels + total_schemas, "{done:?}");
        assert!(
            done.updated.is_empty() && done.deleted.is_empty(),
            "{done:?}"
        );
        assert_eq!(
            list(&state, PRIORITY_LEVELS).await.expect("list").len(),
            total_levels
        );
        assert_eq!(
            list(&state, FLOW_SCHEMAS).await.expect("list").len(),
            total_schemas
        );
        let probes = get(&state, FLOW_SCHEMAS, "probes").await.expect("probes");
        assert_eq!(probes["metadata"]["generation"], 1);
        assert_eq!(
            probes["metadata"]["managedFields"][0]["manager"],
            PRODUCER_FIELD_MANAGER
        );
        // A second pass changes nothing.
        assert_eq!(
            ensure(&state).await.expect("second pass"),
            Ensured::default()
        );

        // A deleted suggested object comes back.
        remove(&state, FLOW_SCHEMAS, "global-default").await;
        let done = ensure(&state).await.expect("pass");
        assert_eq!(done.created, ["flowschemas/global-default"]);

        // A suggested object opted out ("false") keeps its changed spec.
        let mut system = get(&state, PRIORITY_LEVELS, "system")
            .await
            .expect("system");
        system["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION] = json!("false");
        system["spec"]["limited"]["nominalConcurrencyShares"] = json!(3);
        put(&state, PRIORITY_LEVELS, system).await;
        assert_eq!(ensure(&state).await.expect("pass"), Ensured::default());
        let system = get(&state, PRIORITY_LEVELS, "system")
            .await
            .expect("system");
        assert_eq!(system["spec"]["limited"]["nominalConcurrencyShares"], 3);

        // An edited suggested object without the annotation is kept, and annotated "false".
        let mut high = get(&state, PRIORITY_LEVELS, "workload-high")
            .await
            .expect("level");
        high["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("annotations");
        high["spec"]["limited"]["lendablePercent"] = json!(5);
        put(&state, PRIORITY_LEVELS, high).await;
        let done = ensure(&state).await.expect("pass");
        assert_eq!(done.updated, ["prioritylevelconfigurations/workload-high"]);
        let high = get(&state, PRIORITY_LEVELS, "workload-high")
            .await
            .expect("level");
        assert_eq!(high["spec"]["limited"]["lendablePercent"], 5);
        assert_eq!(
            high["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "false"
        );

        // A changed mandatory object is put back.
        let mut catch_all = get(&state, PRIORITY_LEVELS, "catch-all")
            .await
            .expect("level");
        catch_all["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION] = json!("false");
        put(&state, PRIORITY_LEVELS, catch_all).await;
        let done = ensure(&state).await.expect("pass");
        assert_eq!(done.updated, ["prioritylevelconfigurations/catch-all"]);
        let catch_all = get(&state, PRIORITY_LEVELS, "catch-all")
            .await
            .expect("level");
        assert_eq!(
            catch_all["metadata"]["annotations"][boot::AUTOUPDATE_ANNOTATION],
            "true"
        );

        // Objects that are not bootstrap ones go only when annotated true.
        let mine = |name: &str, value: Option<&str>| {
            let mut obj = named(boot::suggested_priority_levels(), "global-default");
            obj["metadata"] = json!({"name": name});
            if let Some(v) = value {
                obj["metadata"]["annotations"] = json!({boot::AUTOUPDATE_ANNOTATION: v});
            }
            obj
        };
        for (name, value) in [
            ("old-level", Some("true")),
            ("kept", Some("false")),
            ("plain", None),
            ("odd", Some("yes")),
        ] {
            let req = request(&state, PRIORITY_LEVELS, Some(name), "test").expect("request");
            handlers::create::create_object(&state, &req, &mut mine(name, value))
                .await
                .expect("create");
        }
        let done = ensure(&state).await.expect("pass");
        assert_eq!(done.deleted, ["prioritylevelconfigurations/old-level"]);
        assert!(get(&state, PRIORITY_LEVELS, "old-level").await.is_none());
        for name in ["kept", "plain", "odd"] {
            assert!(get(&state, PRIORITY_LEVELS, name).await.is_some(), "{name}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sync_status_writes_dangling_conditions_once() {
        let dir = tempfile::tempdir().expect("dir");
        let state = crate::apiserver::tests::state(dir.path());
        ensure(&state).await.expect("ensure");
        sync_status(&state).await.expect("sync");
        let fs = get(&state, FLOW_SCHEMAS, "service-accounts")
            .await
            .expect("fs");
        let condition = &fs["status"]["conditions"][0];
        assert_eq!(condition["type"], DANGLING);
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Found");
        assert_eq!(fs["metadata"]["generation"], 1);
        let revision = fs["metadata"]["resourceVersion"].clone();

        // Nothing changed: nothing written.
        sync_status(&state).await.expect("sync");
        let fs = get(&state, FLOW_SCHEMAS, "service-accounts")
            .await
            .expect("fs");
        assert_eq!(fs["metadata"]["resourceVersion"], revision);

        // Its level gone: dangling.
        remove(&state, PRIORITY_LEVELS, "workload-low").await;
        sync_status(&state).await.expect("sync");
        let fs = get(&state, FLOW_SCHEMAS, "service-accounts")
            .await
            .expect("fs");
        let condition = &fs["status"]["conditions"][0];
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["reason"], "NotFound");
        let other = get(&state, FLOW_SCHEMAS, "global-default")
            .await
            .expect("fs");
        assert_eq!(other["status"]["conditions"][0]["status"], "False");
    }
}
