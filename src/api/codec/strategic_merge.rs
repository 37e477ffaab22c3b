//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`) on `serde_json::Value`.
//!
//! kubectl `apply`, `edit`, `patch` and `set image` send strategic merge patches. They read like
//! JSON merge patches (RFC 7386), except that lists with a declared patch strategy are merged
//! element by element and `$`-prefixed directives steer deletion, replacement, ordering and the
//! clearing of union members. Upstream takes the per-field strategy from Go struct tags; the
//! OpenAPI schemas we generate lack them, so [`PATCH_METADATA`] restates the tags as data and the
//! schema is only walked to learn which definition each nested object belongs to.
//!
//! Behaviour follows the API server's use of `k8s.io/apimachinery/pkg/util/strategicpatch`
//! (parallel deletion lists merged, nulls without a counterpart ignored), including its list
//! ordering: elements named by the patch (or by `$setElementOrder`) take that order and the
//! remaining server elements are interleaved by their old positions, so an element added without
//! `$setElementOrder` lands *before* the untouched ones. Deliberate differences, all lenient:
//! - `$patch: merge` is accepted as a no-op (upstream rejects it);
//! - `$patch: delete` on a map removes the field (upstream leaves `{}`, which decodes the same);
//! - directives and null fields never reach the result, even inside `$patch: replace` maps.

use serde_json::{Map, Value};

/// Definitions of OpenAPI v3 component schemas keyed by name, e.g. "io.k8s.api.apps.v1.Deployment".
/// `$ref`s inside are of the form "#/components/schemas/<name>" (treat the last '/'-segment as the name).
pub type Definitions = serde_json::Map<String, serde_json::Value>;

/// Why a strategic merge patch could not be applied; every variant is a client error (HTTP 422/400).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not a JSON object.
    #[error("strategic merge patch must be a json object, not {found}")]
    NotAnObject {
        /// JSON type of what was sent instead.
        found: &'static str,
    },
    /// `$patch` carries a value other than `replace`, `delete` or `merge`.
    #[error("unknown patch directive \"$patch: {value}\"")]
    UnknownDirective {
        /// The unrecognised directive value.
        value: String,
    },
    /// A directive's value has the wrong JSON type.
    #[error("directive {directive} must be {expected}")]
    InvalidDirective {
        /// The directive key, e.g. `$retainKeys`.
        directive: String,
        /// What its value should have been.
        expected: &'static str,
    },
    /// A `$setElementOrder`/`$deleteFromPrimitiveList` key without a `/<field>` suffix.
    #[error("malformed directive key \"{key}\"")]
    MalformedDirective {
        /// The offending key.
        key: String,
    },
    /// An element of a keyed list (or of its `$setElementOrder`) lacks the merge key.
    #[error("element {element} of list \"{field}\" does not contain its merge key \"{merge_key}\"")]
    MissingMergeKey {
        /// The list field.
        field: String,
        /// The declared merge key.
        merge_key: String,
        /// The element, as compact JSON.
        element: String,
    },
    /// A merged list holds both objects and other values.
    #[error("list \"{field}\" mixes objects with other values")]
    MixedList {
        /// The list field.
        field: String,
    },
    /// A list with the merge strategy holds objects but no merge key is declared for it.
    #[error("cannot merge list \"{field}\" of objects: no merge key is declared")]
    NoMergeKey {
        /// The list field.
        field: String,
    },
    /// The patch sets a field that its own `$retainKeys` would clear.
    #[error("field \"{field}\" is set by the patch but missing from $retainKeys")]
    NotRetained {
        /// The field missing from `$retainKeys`.
        field: String,
    },
    /// The patch list's elements are not in the relative order its `$setElementOrder` gives.
    #[error("the order of list \"{field}\" in the patch does not match $setElementOrder/{field}")]
    OrderMismatch {
        /// The list field.
        field: String,
    },
}

/// Applies `patch` (a strategic merge patch document) to `original`, for an object whose schema is
/// the definition named `root` in `defs` (None or an unknown name = no schema: behave as JSON merge patch
/// (RFC 7386) but still honour `$patch` directives where sensible).
pub fn apply(
    original: &serde_json::Value,
    patch: &serde_json::Value,
    root: Option<&str>,
    defs: &Definitions,
) -> Result<serde_json::Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject {
            found: json_type(patch),
        });
    };
    let original = match original {
        Value::Object(map) => Some(map.clone()),
        _ => None,
    };
    let merged = merge_object(original, patch, Schema::root(defs, root))?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------
// Merge metadata (restated from upstream struct tags)
// ---------------------------------------------------------------------------------------------

const META_V1: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const CORE_V1: &str = "io.k8s.api.core.v1";
const APPS_V1: &str = "io.k8s.api.apps.v1";
const BATCH_V1: &str = "io.k8s.api.batch.v1";
const ADMISSION_V1: &str = "io.k8s.api.admissionregistration.v1";
const AUTOSCALING_V2: &str = "io.k8s.api.autoscaling.v2";
const CERTIFICATES_V1: &str = "io.k8s.api.certificates.v1";
const FLOWCONTROL_V1: &str = "io.k8s.api.flowcontrol.v1";
const NETWORKING_V1: &str = "io.k8s.api.networking.v1";
const POLICY_V1: &str = "io.k8s.api.policy.v1";
const RESOURCE_V1: &str = "io.k8s.api.resource.v1";
const STORAGE_V1: &str = "io.k8s.api.storage.v1";
const STORAGEMIGRATION_V1: &str = "io.k8s.api.storagemigration.v1";

const MERGE: &str = "merge";
const MERGE_RETAIN_KEYS: &str = "merge,retainKeys";
const RETAIN_KEYS: &str = "retainKeys";
const REPLACE: &str = "replace";

/// `patchStrategy`/`patchMergeKey` struct tags of kubernetes/api (`*/v1/types.go`, `autoscaling/v2`)
/// and apimachinery `meta/v1`, as of release 1.33 plus later additions (harmless for older
/// schemas: their definitions or fields simply never match).
///
/// Columns: definition prefix, type name, JSON field, patch strategy, merge key ("" = none).
/// `retainKeys` only permits the `$retainKeys` directive, which is honoured wherever it appears.
#[rustfmt::skip]
const PATCH_METADATA: &[(&str, &str, &str, &str, &str)] = &[
    (META_V1, "ObjectMeta", "ownerReferences", MERGE, "uid"),
    (META_V1, "ObjectMeta", "finalizers", MERGE, ""),
    // core/v1: pods and containers
    (CORE_V1, "PodSpec", "volumes", MERGE_RETAIN_KEYS, "name"),
    (CORE_V1, "PodSpec", "initContainers", MERGE, "name"),
    (CORE_V1, "PodSpec", "containers", MERGE, "name"),
    (CORE_V1, "PodSpec", "ephemeralContainers", MERGE, "name"),
    (CORE_V1, "PodSpec", "imagePullSecrets", MERGE, "name"),
    (CORE_V1, "PodSpec", "hostAliases", MERGE, "ip"),
    (CORE_V1, "PodSpec", "topologySpreadConstraints", MERGE, "topologyKey"),
    (CORE_V1, "PodSpec", "schedulingGates", MERGE, "name"),
    (CORE_V1, "PodSpec", "resourceClaims", MERGE_RETAIN_KEYS, "name"),
    (CORE_V1, "PodSpec", "evictionResponders", MERGE, "name"),
    (CORE_V1, "Container", "ports", MERGE, "containerPort"),
    (CORE_V1, "Container", "env", MERGE, "name"),
    (CORE_V1, "Container", "volumeMounts", MERGE, "mountPath"),
    (CORE_V1, "Container", "volumeDevices", MERGE, "devicePath"),
    (CORE_V1, "EphemeralContainer", "ports", MERGE, "containerPort"),
    (CORE_V1, "EphemeralContainer", "env", MERGE, "name"),
    (CORE_V1, "EphemeralContainer", "volumeMounts", MERGE, "mountPath"),
    (CORE_V1, "EphemeralContainer", "volumeDevices", MERGE, "devicePath"),
    (CORE_V1, "PodStatus", "conditions", MERGE, "type"),
    (CORE_V1, "PodStatus", "hostIPs", MERGE, "ip"),
    (CORE_V1, "PodStatus", "podIPs", MERGE, "ip"),
    (CORE_V1, "PodStatus", "resourceClaimStatuses", MERGE_RETAIN_KEYS, "name"),
    (CORE_V1, "PodStatus", "nodeAllocatableResourceClaimStatuses", MERGE, "resourceClaimName"),
    (CORE_V1, "NodeAllocatableResourceClaimStatus", "mapping", MERGE, "name"),
    (CORE_V1, "NodeAllocatableResourceClaimStatus", "overhead", MERGE, "name"),
    (CORE_V1, "ContainerStatus", "volumeMounts", MERGE, "mountPath"),
    (CORE_V1, "ContainerStatus", "allocatedResourcesStatus", MERGE, "name"),
    (CORE_V1, "VolumeHealthStatus", "healthConditions", MERGE, "status"),
    (CORE_V1, "PodVolumeHealth", "healthConditions", MERGE, "status"),
    // core/v1: everything else
    (CORE_V1, "PersistentVolumeClaimStatus", "conditions", MERGE, "type"),
    (CORE_V1, "ReplicationControllerStatus", "conditions", MERGE, "type"),
    (CORE_V1, "ServiceSpec", "ports", MERGE, "port"),
    (CORE_V1, "ServiceStatus", "conditions", MERGE, "type"),
    (CORE_V1, "ServiceAccount", "secrets", MERGE, "name"),
    (CORE_V1, "NodeSpec", "podCIDRs", MERGE, ""),
    (CORE_V1, "NodeStatus", "conditions", MERGE, "type"),
    (CORE_V1, "NodeStatus", "addresses", MERGE, "type"),
    (CORE_V1, "NamespaceStatus", "conditions", MERGE, "type"),
    (CORE_V1, "ComponentStatus", "conditions", MERGE, "type"),
    // apps/v1
    (APPS_V1, "DeploymentSpec", "strategy", RETAIN_KEYS, ""),
    (APPS_V1, "DeploymentStatus", "conditions", MERGE, "type"),
    (APPS_V1, "ReplicaSetStatus", "conditions", MERGE, "type"),
    (APPS_V1, "StatefulSetStatus", "conditions", MERGE, "type"),
    (APPS_V1, "DaemonSetStatus", "conditions", MERGE, "type"),
    // batch/v1
    (BATCH_V1, "JobStatus", "conditions", MERGE, "type"),
    (BATCH_V1, "JobSchedulingConfiguration", "resourceClaims", MERGE, "name"),
    // other GA groups
    (ADMISSION_V1, "MutatingWebhookConfiguration", "webhooks", MERGE, "name"),
    (ADMISSION_V1, "ValidatingWebhookConfiguration", "webhooks", MERGE, "name"),
    (ADMISSION_V1, "MutatingWebhook", "matchConditions", MERGE, "name"),
    (ADMISSION_V1, "ValidatingWebhook", "matchConditions", MERGE, "name"),
    (ADMISSION_V1, "ValidatingAdmissionPolicySpec", "matchConditions", MERGE, "name"),
    (ADMISSION_V1, "ValidatingAdmissionPolicySpec", "variables", MERGE, "name"),
    (ADMISSION_V1, "MutatingAdmissionPolicySpec", "matchConditions", MERGE, "name"),
    (AUTOSCALING_V2, "HorizontalPodAutoscalerStatus", "conditions", MERGE, "type"),
    (CERTIFICATES_V1, "PodCertificateRequestStatus", "conditions", MERGE, "type"),
    (FLOWCONTROL_V1, "FlowSchemaStatus", "conditions", MERGE, "type"),
    (FLOWCONTROL_V1, "PriorityLevelConfigurationStatus", "conditions", MERGE, "type"),
    (NETWORKING_V1, "ServiceCIDRStatus", "conditions", MERGE, "type"),
    (POLICY_V1, "PodDisruptionBudgetSpec", "selector", REPLACE, ""),
    (POLICY_V1, "PodDisruptionBudgetStatus", "conditions", MERGE, "type"),
    (RESOURCE_V1, "ResourceClaimStatus", "reservedFor", MERGE, "uid"),
    (RESOURCE_V1, "DeviceTaintRuleStatus", "conditions", MERGE, "type"),
    (STORAGE_V1, "CSINodeSpec", "drivers", MERGE, "name"),
    (STORAGE_V1, "CSINodeStatus", "storageHealth", MERGE, "name"),
    (STORAGEMIGRATION_V1, "StorageVersionMigrationStatus", "conditions", MERGE, "type"),
];

/// How a field's value is combined with the original when both are lists or both are maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Strategy {
    /// Maps merge recursively, lists are replaced.
    #[default]
    Default,
    /// Lists merge: by merge key for objects, as an ordered set for primitives.
    Merge,
    /// The patch value replaces the original outright.
    Replace,
}

/// Patch metadata of one field of one definition.
#[derive(Debug, Clone, Copy, Default)]
struct FieldMeta {
    strategy: Strategy,
    merge_key: Option<&'static str>,
}

/// Looks up the metadata of `field` in the definition named `definition`.
fn lookup_meta(definition: &str, field: &str) -> FieldMeta {
    let Some((prefix, kind)) = definition.rsplit_once('.') else {
        return FieldMeta::default();
    };
    PATCH_METADATA
        .iter()
        .find(|row| row.0 == prefix && row.1 == kind && row.2 == field)
        .map(|row| FieldMeta::from_tags(row.3, row.4))
        .unwrap_or_default()
}

impl FieldMeta {
    /// Interprets a `patchStrategy` tag (comma-separated) and a `patchMergeKey` tag.
    fn from_tags(strategy: &str, merge_key: &'static str) -> Self {
        let strategies = || strategy.split(',').map(str::trim);
        let strategy = if strategies().any(|s| s == MERGE) {
            Strategy::Merge
        } else if strategies().any(|s| s == REPLACE) {
            Strategy::Replace
        } else {
            Strategy::Default
        };
        let merge_key = Some(merge_key).filter(|key| !key.is_empty());
        FieldMeta {
            strategy,
            merge_key,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema walk
// ---------------------------------------------------------------------------------------------

/// Hops through `$ref` chains before giving up (guards against reference cycles).
const MAX_REF_HOPS: usize = 32;

/// A position in the schema tree, walked alongside the value being patched.
#[derive(Clone, Copy)]
struct Schema<'a> {
    defs: &'a Definitions,
    /// Definition the node belongs to once `$ref`s are resolved; `None` for inline schemas.
    definition: Option<&'a str>,
    /// The schema node; `None` once the walk leaves known territory.
    node: Option<&'a Value>,
}

/// A field of an object being patched: its name, patch metadata and value schema.
#[derive(Clone, Copy)]
struct Field<'a> {
    name: &'a str,
    meta: FieldMeta,
    schema: Schema<'a>,
}

impl<'a> Schema<'a> {
    /// The schema of the definition named `root`, or no schema when it is absent or unknown.
    fn root(defs: &'a Definitions, root: Option<&str>) -> Self {
        let found = root.and_then(|name| defs.get_key_value(name));
        Schema {
            defs,
            definition: found.map(|(name, _)| name.as_str()),
            node: found.map(|(_, node)| node),
        }
    }

    /// Follows `$ref` (bare or wrapped in `allOf`) to the referenced definition.
    fn resolve(self) -> Self {
        let mut current = self;
        for _ in 0..MAX_REF_HOPS {
            let Some(target) = current.node.and_then(ref_target) else {
                return current;
            };
            let found = current.defs.get_key_value(target);
            current = Schema {
                definition: found.map(|(name, _)| name.as_str()),
                node: found.map(|(_, node)| node),
                ..current
            };
        }
        Schema {
            definition: None,
            node: None,
            ..current
        }
    }

    /// The field `name` of this (resolved) object schema: a property, else the map value schema.
    fn field(self, name: &'a str) -> Field<'a> {
        let meta = self
            .definition
            .map(|definition| lookup_meta(definition, name))
            .unwrap_or_default();
        let node = self.node.and_then(|object| {
            object
                .get("properties")
                .and_then(|properties| properties.get(name))
                .or_else(|| object.get("additionalProperties").filter(|s| s.is_object()))
        });
        Field {
            name,
            meta,
            schema: Schema {
                definition: None,
                node,
                ..self
            },
        }
    }

    /// The element schema of this list schema.
    fn items(self) -> Self {
        let list = self.resolve();
        Schema {
            definition: None,
            node: list.node.and_then(|node| node.get("items")),
            ..list
        }
    }
}

/// The definition name a schema node refers to, if it is a reference.
fn ref_target(node: &Value) -> Option<&str> {
    let reference = node.get("$ref").or_else(|| {
        node.get("allOf")?
            .as_array()?
            .iter()
            .find_map(|member| member.get("$ref"))
    })?;
    reference.as_str()?.rsplit('/').next()
}

// ---------------------------------------------------------------------------------------------
// Maps
// ---------------------------------------------------------------------------------------------

const PATCH: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// A `$patch` directive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Merge,
    Replace,
    Delete,
}

/// What a key of a patch map stands for.
#[derive(Clone, Copy)]
enum PatchKey<'a> {
    /// `$patch` or `$retainKeys`, handled before the fields.
    Directive,
    /// `$setElementOrder/<field>`.
    SetOrder(&'a str),
    /// `$deleteFromPrimitiveList/<field>`.
    DeleteFrom(&'a str),
    /// An ordinary field.
    Field(&'a str),
}

/// Merges a patch map into an original map (`None` = absent); `None` means "delete this map".
fn merge_object<'a>(
    original: Option<Map<String, Value>>,
    patch: &'a Map<String, Value>,
    schema: Schema<'a>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    let base = match directive_of(patch)? {
        Some(Directive::Delete) => return Ok(None),
        Some(Directive::Replace) => Map::new(),
        Some(Directive::Merge) | None => original.unwrap_or_default(),
    };
    merge_fields(base, patch, schema.resolve()).map(Some)
}

/// Applies every key of `patch` to `target`: deletions from primitive lists, then ordered lists,
/// then the remaining fields in patch order.
fn merge_fields<'a>(
    mut target: Map<String, Value>,
    patch: &'a Map<String, Value>,
    object: Schema<'a>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(retain) = patch.get(RETAIN_KEYS_DIRECTIVE) {
        retain_keys(&mut target, patch, retain)?;
    }
    let keys = patch
        .iter()
        .map(|(key, value)| Ok((classify(key)?, value)))
        .collect::<Result<Vec<_>, PatchError>>()?;
    for (key, value) in &keys {
        if let PatchKey::DeleteFrom(field) = *key {
            delete_from_primitive_list(&mut target, field, value)?;
        }
    }
    let mut ordered = Vec::new();
    for (key, value) in &keys {
        if let PatchKey::SetOrder(field) = *key
            && set_element_order(&mut target, patch, object.field(field), value)?
        {
            ordered.push(field);
        }
    }
    for (key, value) in &keys {
        if let PatchKey::Field(name) = *key
            && !ordered.contains(&name)
        {
            merge_field(&mut target, object.field(name), value)?;
        }
    }
    Ok(target)
}

/// Sorts a patch key into directive or field.
fn classify(key: &str) -> Result<PatchKey<'_>, PatchError> {
    if key == PATCH || key == RETAIN_KEYS_DIRECTIVE {
        return Ok(PatchKey::Directive);
    }
    if let Some(rest) = key.strip_prefix(SET_ELEMENT_ORDER) {
        return directive_field(key, rest).map(PatchKey::SetOrder);
    }
    if let Some(rest) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
        return directive_field(key, rest).map(PatchKey::DeleteFrom);
    }
    Ok(PatchKey::Field(key))
}

/// The `<field>` of a `$directive/<field>` key, given what follows the directive name.
fn directive_field<'k>(key: &str, rest: &'k str) -> Result<&'k str, PatchError> {
    rest.strip_prefix('/')
        .filter(|field| !field.is_empty())
        .ok_or_else(|| PatchError::MalformedDirective {
            key: key.to_owned(),
        })
}

/// Reads the `$patch` directive of a patch map, if any.
fn directive_of(map: &Map<String, Value>) -> Result<Option<Directive>, PatchError> {
    map.get(PATCH).map(parse_directive).transpose()
}

/// Parses a `$patch` value.
fn parse_directive(value: &Value) -> Result<Directive, PatchError> {
    match value.as_str() {
        Some("merge") => Ok(Directive::Merge),
        Some("replace") => Ok(Directive::Replace),
        Some("delete") => Ok(Directive::Delete),
        Some(other) => Err(PatchError::UnknownDirective {
            value: other.to_owned(),
        }),
        None => Err(PatchError::InvalidDirective {
            directive: PATCH.to_owned(),
            expected: "a string",
        }),
    }
}

/// Applies `$retainKeys`: clears original fields not listed, after checking that the patch
/// itself only sets listed fields.
fn retain_keys(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), PatchError> {
    let keep = string_list(retain).ok_or_else(|| PatchError::InvalidDirective {
        directive: RETAIN_KEYS_DIRECTIVE.to_owned(),
        expected: "a list of strings",
    })?;
    let unlisted = patch
        .iter()
        .find(|(key, value)| !value.is_null() && !key.starts_with('$') && !keep.contains(key));
    if let Some((field, _)) = unlisted {
        return Err(PatchError::NotRetained {
            field: field.clone(),
        });
    }
    target.retain(|key, _| keep.contains(&key));
    Ok(())
}

/// The strings of a JSON list of strings.
fn string_list(value: &Value) -> Option<Vec<&String>> {
    value
        .as_array()?
        .iter()
        .map(|item| match item {
            Value::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Applies `$deleteFromPrimitiveList/<field>`: removes the listed values from the original list.
fn delete_from_primitive_list(
    target: &mut Map<String, Value>,
    field: &str,
    values: &Value,
) -> Result<(), PatchError> {
    let Value::Array(remove) = values else {
        return Err(PatchError::InvalidDirective {
            directive: format!("{DELETE_FROM_PRIMITIVE_LIST}/{field}"),
            expected: "a list",
        });
    };
    if let Some(Value::Array(items)) = target.get_mut(field) {
        items.retain(|item| !remove.iter().any(|r| values_equal(r, item)));
    }
    Ok(())
}

/// Merges one field of the patch into `target`, removing it when the result is "absent".
fn merge_field(
    target: &mut Map<String, Value>,
    field: Field<'_>,
    patch: &Value,
) -> Result<(), PatchError> {
    let current = target.get_mut(field.name).map(Value::take);
    match merge_value(current, patch, field)? {
        Some(value) => {
            target.insert(field.name.to_owned(), value);
        }
        None => {
            target.shift_remove(field.name);
        }
    }
    Ok(())
}

/// Merges a patch value into the current value of a field (`None` = absent, in and out).
fn merge_value(
    current: Option<Value>,
    patch: &Value,
    field: Field<'_>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(map) => {
            let current = match current {
                Some(Value::Object(m)) if field.meta.strategy != Strategy::Replace => Some(m),
                _ => None,
            };
            Ok(merge_object(current, map, field.schema)?.map(Value::Object))
        }
        Value::Array(items) => {
            let current = match current {
                Some(Value::Array(c)) => c,
                _ => Vec::new(),
            };
            Ok(Some(Value::Array(merge_list(current, items, field)?)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

// ---------------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------------

/// What a merge-strategy list holds, judged from both the original and the patch.
enum ListKind {
    Empty,
    Scalars,
    Objects,
}

impl ListKind {
    /// Classifies the elements of `current` and `patch` together.
    fn of(current: &[Value], patch: &[Value], field: &str) -> Result<Self, PatchError> {
        let objects = current
            .iter()
            .chain(patch)
            .filter(|v| v.is_object())
            .count();
        match objects {
            0 if current.is_empty() && patch.is_empty() => Ok(ListKind::Empty),
            0 => Ok(ListKind::Scalars),
            n if n == current.len() + patch.len() => Ok(ListKind::Objects),
            _ => Err(PatchError::MixedList {
                field: field.to_owned(),
            }),
        }
    }
}

/// Merges a patch list into the current list of a field according to its strategy.
fn merge_list(
    current: Vec<Value>,
    patch: &[Value],
    field: Field<'_>,
) -> Result<Vec<Value>, PatchError> {
    let items = field.schema.items();
    if field.meta.strategy != Strategy::Merge {
        return fresh_list(patch, items);
    }
    match ListKind::of(&current, patch, field.name)? {
        ListKind::Empty => Ok(current),
        ListKind::Scalars => Ok(merge_scalars(current, patch)),
        ListKind::Objects => {
            let key = field.meta.merge_key.ok_or_else(|| PatchError::NoMergeKey {
                field: field.name.to_owned(),
            })?;
            merge_keyed(current, patch, key, field.name, items)
        }
    }
}

/// A replacing list: patch elements with directives stripped; list markers (`$patch: replace`
/// or `delete` elements) have nothing to act on and are dropped, as upstream does.
fn fresh_list(patch: &[Value], items: Schema<'_>) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for element in patch {
        match element {
            Value::Object(map) => match directive_of(map)? {
                Some(Directive::Replace | Directive::Delete) => {}
                Some(Directive::Merge) | None => out.extend(fresh_object(map, items)?),
            },
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

/// A patch map applied to nothing: itself, minus directives and nulls.
fn fresh_object(map: &Map<String, Value>, schema: Schema<'_>) -> Result<Option<Value>, PatchError> {
    Ok(merge_object(None, map, schema)?.map(Value::Object))
}

/// Merges primitive lists as an ordered set (union), ordered as upstream does.
fn merge_scalars(current: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(current.len() + patch.len());
    for value in current.iter().chain(patch) {
        if !merged.iter().any(|m| values_equal(m, value)) {
            merged.push(value.clone());
        }
    }
    arrange(merged, patch, &current, Identity::Whole)
}

/// A keyed list's patch elements, split from its `$patch` marker elements.
struct SplitPatch<'a> {
    /// The original list after `$patch: delete` elements took effect.
    current: Vec<Value>,
    /// Elements to merge by key, in patch order.
    regular: Vec<&'a Map<String, Value>>,
    /// Whether a `{"$patch": "replace"}` element asks for the list to be replaced.
    replace: bool,
}

/// Merges lists of objects by `key`: deletions, replacement, element merges, then ordering.
fn merge_keyed<'a>(
    current: Vec<Value>,
    patch: &'a [Value],
    key: &str,
    field: &str,
    items: Schema<'a>,
) -> Result<Vec<Value>, PatchError> {
    let split = split_patch_list(current, patch, key, field)?;
    if split.replace {
        let fresh = split.regular.iter().map(|map| fresh_object(map, items));
        return fresh.filter_map(Result::transpose).collect();
    }
    let mut current = split.current;
    let identity = Identity::Key(key);
    let server = identity.ids(&current);
    let order: Vec<Value> = split
        .regular
        .iter()
        .filter_map(|map| map.get(key).cloned())
        .collect();
    for element in split.regular {
        merge_element(&mut current, element, key, field, items)?;
    }
    Ok(arrange(current, &order, &server, identity))
}

/// Applies `$patch: delete` elements and separates regular ones.
fn split_patch_list<'a>(
    mut current: Vec<Value>,
    patch: &'a [Value],
    key: &str,
    field: &str,
) -> Result<SplitPatch<'a>, PatchError> {
    let mut regular = Vec::with_capacity(patch.len());
    let mut replace = false;
    for element in patch {
        let Value::Object(map) = element else {
            return Err(PatchError::MixedList {
                field: field.to_owned(),
            });
        };
        match directive_of(map)? {
            None | Some(Directive::Merge) => regular.push(map),
            Some(Directive::Replace) => replace = true,
            Some(Directive::Delete) => {
                let id = Identity::Key(key).required(element, field)?;
                current.retain(|c| !c.get(key).is_some_and(|v| values_equal(v, id)));
            }
        }
    }
    Ok(SplitPatch {
        current,
        regular,
        replace,
    })
}

/// Merges one patch element into the element with the same key, or appends it.
fn merge_element(
    current: &mut Vec<Value>,
    element: &Map<String, Value>,
    key: &str,
    field: &str,
    items: Schema<'_>,
) -> Result<(), PatchError> {
    let id = element
        .get(key)
        .ok_or_else(|| missing_key(field, key, element))?;
    let found = current
        .iter_mut()
        .find(|c| c.get(key).is_some_and(|v| values_equal(v, id)));
    match found {
        Some(slot) => {
            let existing = match slot.take() {
                Value::Object(map) => Some(map),
                _ => None,
            };
            let merged = merge_object(existing, element, items)?;
            *slot = Value::Object(merged.unwrap_or_default());
        }
        None => current.extend(fresh_object(element, items)?),
    }
    Ok(())
}

/// Applies `$setElementOrder/<field>`: merges the field (if the patch has it) and orders the
/// result. Returns whether the field was handled here (so the field pass must skip it).
fn set_element_order(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    field: Field<'_>,
    order: &Value,
) -> Result<bool, PatchError> {
    let Value::Array(order) = order else {
        return Err(PatchError::InvalidDirective {
            directive: format!("{SET_ELEMENT_ORDER}/{}", field.name),
            expected: "a list",
        });
    };
    let patch_list = match patch.get(field.name) {
        None => None,
        Some(Value::Array(items)) => Some(items.as_slice()),
        // A null or non-list value replaces the field; the field pass handles that.
        Some(_) => return Ok(false),
    };
    let identity = field.meta.merge_key.map_or(Identity::Whole, Identity::Key);
    let order = identity.required_ids(order, field.name)?;
    if let Some(items) = patch_list {
        check_order(items, &order, identity, field.name)?;
    }
    let current = match target.get_mut(field.name) {
        Some(Value::Array(items)) => Some(std::mem::take(items)),
        _ => None,
    };
    let server = current
        .as_deref()
        .map(|c| identity.ids(c))
        .unwrap_or_default();
    let merged = match (current, patch_list) {
        (None, None) => return Ok(true),
        (Some(current), None) => current,
        (current, Some(items)) => merge_list(current.unwrap_or_default(), items, field)?,
    };
    let arranged = arrange(merged, &order, &server, identity);
    target.insert(field.name.to_owned(), Value::Array(arranged));
    Ok(true)
}

/// Checks that the patch list's regular elements appear in `$setElementOrder` in the same order.
fn check_order(
    patch: &[Value],
    order: &[Value],
    identity: Identity<'_>,
    field: &str,
) -> Result<(), PatchError> {
    let wanted = patch
        .iter()
        .filter(|element| element.get(PATCH).is_none())
        .map(|element| identity.required(element, field))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next = 0;
    for id in order {
        if wanted.get(next).is_some_and(|w| values_equal(w, id)) {
            next += 1;
        }
    }
    if next < wanted.len() {
        return Err(PatchError::OrderMismatch {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// How list elements are told apart: by the whole value or by a merge key.
#[derive(Clone, Copy)]
enum Identity<'k> {
    Whole,
    Key(&'k str),
}

impl Identity<'_> {
    /// The identifying value of an element, if it has one.
    fn of(self, element: &Value) -> Option<&Value> {
        match self {
            Identity::Whole => Some(element),
            Identity::Key(key) => element.get(key),
        }
    }

    /// The identifying value of an element, which must have one.
    fn required<'v>(self, element: &'v Value, field: &str) -> Result<&'v Value, PatchError> {
        match self {
            Identity::Whole => Ok(element),
            Identity::Key(key) => element.get(key).ok_or_else(|| PatchError::MissingMergeKey {
                field: field.to_owned(),
                merge_key: key.to_owned(),
                element: element.to_string(),
            }),
        }
    }

    /// The identifying values of a list's elements (elements without one are skipped).
    fn ids(self, list: &[Value]) -> Vec<Value> {
        list.iter().filter_map(|e| self.of(e).cloned()).collect()
    }

    /// The identifying values of a list's elements, all of which must have one.
    fn required_ids(self, list: &[Value], field: &str) -> Result<Vec<Value>, PatchError> {
        list.iter()
            .map(|e| self.required(e, field).cloned())
            .collect()
    }

    /// Where an element's identity first occurs among `ids`.
    fn position(self, ids: &[Value], element: &Value) -> Option<usize> {
        let id = self.of(element)?;
        ids.iter().position(|candidate| values_equal(candidate, id))
    }
}

/// Orders a merged list as upstream does: elements named in `order` take that order; the rest
/// keep their `server` order and are slotted in before the first named element they preceded.
fn arrange(
    merged: Vec<Value>,
    order: &[Value],
    server: &[Value],
    identity: Identity<'_>,
) -> Vec<Value> {
    let (mut named, mut rest): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|element| identity.position(order, element).is_some());
    named.sort_by_key(|element| identity.position(order, element));
    rest.sort_by_key(|element| identity.position(server, element).unwrap_or(usize::MAX));
    interleave(rest, named, server, identity)
}

/// Merges two sorted lists; a `rest` element goes first only when both it and the next named
/// element were on the server and it came earlier there.
fn interleave(
    rest: Vec<Value>,
    named: Vec<Value>,
    server: &[Value],
    identity: Identity<'_>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(rest.len() + named.len());
    let mut rest = rest.into_iter().peekable();
    let mut named = named.into_iter().peekable();
    loop {
        let take_rest = match (rest.peek(), named.peek()) {
            (Some(r), Some(n)) => matches!(
                (identity.position(server, r), identity.position(server, n)),
                (Some(a), Some(b)) if a < b
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_rest { rest.next() } else { named.next() });
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// JSON equality, except that numbers compare by value (`80` equals `80.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

/// The error for a keyed-list element without its merge key.
fn missing_key(field: &str, key: &str, element: &Map<String, Value>) -> PatchError {
    PatchError::MissingMergeKey {
        field: field.to_owned(),
        merge_key: key.to_owned(),
        element: Value::Object(element.clone()).to_string(),
    }
}

/// The JSON type name of a value, for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    //! Schemas come from k8s-openapi (v1_33) through schemars' OpenAPI 3 settings. What schemars
    //! really produces: definition keys are the full dotted names ("io.k8s.api.apps.v1.Deployment"),
    //! `$ref`s read "#/components/schemas/<name>" (no normalisation needed), and a `$ref` that
    //! carries a description is wrapped as `{"description": .., "allOf": [{"$ref": ..}]}`.

    use super::*;
    use k8s_openapi::api::{
        admissionregistration::v1 as admission, apps::v1 as apps, autoscaling::v2 as autoscaling,
        batch::v1 as batch, core::v1 as core, flowcontrol::v1 as flowcontrol,
        networking::v1 as networking, policy::v1 as policy, storage::v1 as storage,
    };
    use serde_json::json;
    use std::sync::OnceLock;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const SERVICE: &str = "io.k8s.api.core.v1.Service";
    const POD: &str = "io.k8s.api.core.v1.Pod";
    const NODE: &str = "io.k8s.api.core.v1.Node";

    /// Definitions for every kind the tests patch, generated once.
    fn defs() -> &'static Definitions {
        static DEFS: OnceLock<Definitions> = OnceLock::new();
        DEFS.get_or_init(|| {
            let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
            generator.subschema_for::<core::Pod>();
            generator.subschema_for::<core::Service>();
            generator.subschema_for::<core::Node>();
            generator.subschema_for::<core::Namespace>();
            generator.subschema_for::<core::ServiceAccount>();
            generator.subschema_for::<core::PersistentVolumeClaim>();
            generator.subschema_for::<core::ReplicationController>();
            generator.subschema_for::<core::ComponentStatus>();
            generator.subschema_for::<apps::Deployment>();
            generator.subschema_for::<apps::StatefulSet>();
            generator.subschema_for::<apps::DaemonSet>();
            generator.subschema_for::<apps::ReplicaSet>();
            generator.subschema_for::<batch::Job>();
            generator.subschema_for::<batch::CronJob>();
            generator.subschema_for::<admission::MutatingWebhookConfiguration>();
            generator.subschema_for::<admission::ValidatingWebhookConfiguration>();
            generator.subschema_for::<admission::ValidatingAdmissionPolicy>();
            generator.subschema_for::<autoscaling::HorizontalPodAutoscaler>();
            generator.subschema_for::<flowcontrol::FlowSchema>();
            generator.subschema_for::<flowcontrol::PriorityLevelConfiguration>();
            generator.subschema_for::<networking::ServiceCIDR>();
            generator.subschema_for::<policy::PodDisruptionBudget>();
            generator.subschema_for::<storage::CSINode>();
            generator.take_definitions(true)
        })
    }

    fn patched(root: &str, original: &Value, patch: Value) -> Value {
        apply(original, &patch, Some(root), defs()).expect("patch applies")
    }

    fn patch_error(root: Option<&str>, original: &Value, patch: Value) -> PatchError {
        apply(original, &patch, root, defs()).expect_err("patch is rejected")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web", "tier": "backend"},
                "finalizers": ["a.example.com/x", "b.example.com/y"]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "nginx:1.25",
                                "args": ["--port", "80"],
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
                            },
                            {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "3600"]}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn pod_spec_patch(spec: Value) -> Value {
        json!({"spec": {"template": {"spec": spec}}})
    }

    fn containers(deployment: &Value) -> &Value {
        &deployment["spec"]["template"]["spec"]["containers"]
    }

    fn names(list: &Value) -> Vec<&str> {
        let items = list.as_array().expect("a list");
        items.iter().filter_map(|c| c["name"].as_str()).collect()
    }

    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    assert!(!key.starts_with('$'), "directive {key} leaked into {value}");
                    assert_no_directives(child);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    // --- what schemars produces -----------------------------------------------------------

    #[test]
    fn schemars_definitions_use_component_refs_and_all_of_wrappers() {
        let spec = &defs()["io.k8s.api.apps.v1.DeploymentSpec"]["properties"];
        assert_eq!(
            spec["strategy"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"
        );
        let pod_spec = &defs()["io.k8s.api.core.v1.PodSpec"]["properties"];
        assert_eq!(
            pod_spec["containers"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
    }

    #[test]
    fn metadata_table_matches_generated_schemas() {
        // Rows for tags added upstream after 1.33 (newer types, or newer fields of old types).
        let newer = [
            ("io.k8s.api.core.v1.PodSpec", "evictionResponders"),
            (
                "io.k8s.api.core.v1.PodStatus",
                "nodeAllocatableResourceClaimStatuses",
            ),
            (
                "io.k8s.api.core.v1.NodeAllocatableResourceClaimStatus",
                "mapping",
            ),
            (
                "io.k8s.api.core.v1.NodeAllocatableResourceClaimStatus",
                "overhead",
            ),
            ("io.k8s.api.core.v1.VolumeHealthStatus", "healthConditions"),
            ("io.k8s.api.core.v1.PodVolumeHealth", "healthConditions"),
            (
                "io.k8s.api.batch.v1.JobSchedulingConfiguration",
                "resourceClaims",
            ),
            (
                "io.k8s.api.admissionregistration.v1.MutatingAdmissionPolicySpec",
                "matchConditions",
            ),
            (
                "io.k8s.api.certificates.v1.PodCertificateRequestStatus",
                "conditions",
            ),
            ("io.k8s.api.resource.v1.ResourceClaimStatus", "reservedFor"),
            ("io.k8s.api.resource.v1.DeviceTaintRuleStatus", "conditions"),
            ("io.k8s.api.storage.v1.CSINodeStatus", "storageHealth"),
            (
                "io.k8s.api.storagemigration.v1.StorageVersionMigrationStatus",
                "conditions",
            ),
        ];
        for (prefix, kind, field, strategy, _) in PATCH_METADATA {
            let definition = format!("{prefix}.{kind}");
            if newer.contains(&(definition.as_str(), *field)) {
                continue;
            }
            let schema = defs().get(&definition);
            let property = schema.and_then(|s| s["properties"].get(*field));
            let property = property.unwrap_or_else(|| panic!("{definition}.{field} not in schema"));
            let is_list = property["type"] == "array";
            assert_eq!(is_list, strategy.contains(MERGE), "{definition}.{field}");
        }
    }

    // --- kubectl-shaped patches -------------------------------------------------------------

    #[test]
    fn kubectl_apply_changes_container_image() {
        let original = deployment();
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.26", "name": "app"}]
        }));
        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        assert_eq!(patched(DEPLOYMENT, &original, patch), expected);
    }

    #[test]
    fn kubectl_apply_adds_env_var_in_declared_order() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}, {"name": "B"}],
                "env": [{"name": "C", "value": "3"}],
                "name": "app"
            }]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([
                {"name": "A", "value": "1"},
                {"name": "C", "value": "3"},
                {"name": "B", "value": "2"}
            ])
        );
    }

    #[test]
    fn kubectl_apply_removes_env_var() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"$patch": "delete", "name": "B"}],
                "name": "app"
            }]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            containers(&result)[0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(containers(&result)[0]["image"], "nginx:1.25");
    }

    #[test]
    fn delete_directive_removes_container() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(names(containers(&result)), ["app"]);
        assert_eq!(
            containers(&result)[0],
            deployment()["spec"]["template"]["spec"]["containers"][0]
        );
    }

    #[test]
    fn kubectl_set_image_keeps_order() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "busybox:1.37", "name": "sidecar"}]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(names(containers(&result)), ["app", "sidecar"]);
        assert_eq!(containers(&result)[1]["image"], "busybox:1.37");
        assert_eq!(containers(&result)[1]["args"], json!(["sleep", "3600"]));
    }

    #[test]
    fn set_element_order_alone_reorders() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(names(containers(&result)), ["sidecar", "app"]);
        assert_eq!(containers(&result)[1]["env"][1]["name"], "B");
    }

    #[test]
    fn set_element_order_interleaves_server_only_elements() {
        // Mirrors upstream's "set elements order in a list with server-only items 3".
        let container = |name: &str| json!({"name": name, "image": "i"});
        let list = ["1", "2", "7", "9", "8", "3", "4"].map(container);
        let original = json!({"spec": {"template": {"spec": {"containers": list}}}});
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]
        }));
        let result = patched(DEPLOYMENT, &original, patch);
        assert_eq!(
            names(containers(&result)),
            ["2", "1", "7", "9", "8", "4", "3"]
        );
    }

    #[test]
    fn new_element_without_order_goes_first_like_upstream() {
        let patch = pod_spec_patch(json!({"containers": [{"name": "log", "image": "fluentd"}]}));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(names(containers(&result)), ["log", "app", "sidecar"]);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}, {"port": 9090}],
            "ports": [{"port": 80, "targetPort": 9080}, {"name": "metrics", "port": 9090}]
        }});
        assert_eq!(
            patched(SERVICE, &original, patch),
            json!({"spec": {"ports": [
                {"name": "http", "port": 80, "targetPort": 9080},
                {"name": "https", "port": 443, "targetPort": 8443},
                {"name": "metrics", "port": 9090}
            ]}})
        );
    }

    #[test]
    fn service_port_deleted_by_port() {
        let original = json!({"spec": {"ports": [{"port": 80}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"$patch": "delete", "port": 80}]}});
        assert_eq!(
            patched(SERVICE, &original, patch),
            json!({"spec": {"ports": [{"port": 443}]}})
        );
    }

    #[test]
    fn merge_keys_compare_numbers_by_value() {
        let original = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let patch = json!({"spec": {"ports": [{"port": 80.0, "targetPort": 8080}]}});
        let result = patched(SERVICE, &original, patch);
        assert_eq!(result["spec"]["ports"].as_array().map(Vec::len), Some(1));
        assert_eq!(result["spec"]["ports"][0]["targetPort"], 8080);
    }

    // --- primitive lists ----------------------------------------------------------------------

    #[test]
    fn finalizers_merge_as_ordered_set() {
        let patch = json!({"metadata": {"finalizers": ["c.example.com/z", "a.example.com/x"]}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["c.example.com/z", "a.example.com/x", "b.example.com/y"])
        );
    }

    #[test]
    fn finalizers_delete_from_primitive_list() {
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a.example.com/x", "not-there"]
        }});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["b.example.com/y"]));
    }

    #[test]
    fn finalizers_set_element_order_with_addition() {
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["b.example.com/y", "c.example.com/z", "a.example.com/x"],
            "finalizers": ["c.example.com/z"]
        }});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["b.example.com/y", "c.example.com/z", "a.example.com/x"])
        );
    }

    #[test]
    fn kubectl_apply_removes_finalizer() {
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a.example.com/x"],
            "$setElementOrder/finalizers": ["b.example.com/y"]
        }});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["b.example.com/y"]));
    }

    #[test]
    fn delete_from_primitive_list_on_missing_list_adds_nothing() {
        let original = json!({"metadata": {"name": "x"}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(patched(DEPLOYMENT, &original, patch), original);
    }

    #[test]
    fn node_pod_cidrs_merge_as_set() {
        let original = json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}});
        let patch = json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}});
        let result = patched(NODE, &original, patch);
        assert_eq!(
            result["spec"]["podCIDRs"],
            json!(["10.0.0.0/24", "fd00::/64"])
        );
    }

    // --- retainKeys ---------------------------------------------------------------------------

    #[test]
    fn retain_keys_switches_strategy_to_recreate() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "rollingUpdate": null,
            "type": "Recreate"
        }}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_clears_unlisted_fields_without_nulls() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn retain_keys_changes_volume_source() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{
                "$retainKeys": ["configMap", "name"],
                "configMap": {"name": "settings"},
                "name": "data"
            }]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            result["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "settings"}}])
        );
    }

    #[test]
    fn retain_keys_rejects_unlisted_patch_field() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert!(matches!(error, PatchError::NotRetained { ref field } if field == "rollingUpdate"));
    }

    // --- $patch on maps and lists -----------------------------------------------------------

    #[test]
    fn replace_directive_replaces_map() {
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "team": "blue"}}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["metadata"]["labels"], json!({"team": "blue"}));
    }

    #[test]
    fn replace_directive_strips_nested_directives() {
        let patch = json!({"spec": {"template": {"$patch": "replace", "spec": {
            "$setElementOrder/containers": [{"name": "only"}],
            "containers": [{"name": "only", "image": "x", "env": [{"$patch": "delete", "name": "Q"}]}]
        }}}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            result["spec"]["template"],
            json!({"spec": {"containers": [{"name": "only", "image": "x", "env": []}]}})
        );
    }

    #[test]
    fn delete_directive_removes_map() {
        let patch = json!({"spec": {"strategy": {"rollingUpdate": {"$patch": "delete"}}}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["spec"]["strategy"], json!({"type": "RollingUpdate"}));
    }

    #[test]
    fn merge_directive_is_the_default() {
        let patch = json!({"metadata": {"labels": {"$patch": "merge", "team": "blue"}}});
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            result["metadata"]["labels"],
            json!({"app": "web", "tier": "backend", "team": "blue"})
        );
    }

    #[test]
    fn replace_element_replaces_whole_list() {
        let patch = pod_spec_patch(json!({"containers": [
            {"name": "only", "image": "x"},
            {"$patch": "replace"}
        ]}));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            *containers(&result),
            json!([{"name": "only", "image": "x"}])
        );
    }

    #[test]
    fn top_level_directives() {
        let replaced = patched(
            DEPLOYMENT,
            &deployment(),
            json!({"$patch": "replace", "kind": "X"}),
        );
        assert_eq!(replaced, json!({"kind": "X"}));
        let deleted = patched(DEPLOYMENT, &deployment(), json!({"$patch": "delete"}));
        assert_eq!(deleted, json!({}));
    }

    // --- plain merge behaviour ----------------------------------------------------------------

    #[test]
    fn null_deletes_and_new_objects_drop_nulls() {
        let patch = json!({
            "metadata": {"labels": {"tier": null}, "annotations": {"a": "1", "b": null}},
            "spec": {"paused": true, "replicas": null}
        });
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(result["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(result["metadata"]["annotations"], json!({"a": "1"}));
        assert_eq!(result["spec"]["paused"], true);
        assert!(result["spec"].get("replicas").is_none());
    }

    #[test]
    fn list_without_strategy_is_replaced() {
        let patch =
            pod_spec_patch(json!({"containers": [{"name": "app", "args": ["--port", "81"]}]}));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(containers(&result)[0]["args"], json!(["--port", "81"]));
        assert_eq!(containers(&result)[0]["env"][0]["name"], "A");
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let patch = pod_spec_patch(json!({"containers": [{"name": "app", "ports": [
            {"containerPort": 80, "name": "http"},
            {"containerPort": 9090}
        ]}]}));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            containers(&result)[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 9090}])
        );
    }

    #[test]
    fn directive_keys_never_reach_result() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/initContainers": [{"name": "init"}],
            "initContainers": [{
                "name": "init",
                "$setElementOrder/env": [{"name": "X"}],
                "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}],
                "resources": {"$patch": "replace", "limits": {"cpu": "1"}},
                "securityContext": {"$retainKeys": ["runAsUser"], "runAsUser": 1000}
            }],
            "nodeSelector": {"$patch": "merge", "disk": "ssd"},
            "$deleteFromPrimitiveList/unknownList": ["x"]
        }));
        let result = patched(DEPLOYMENT, &deployment(), patch);
        assert_no_directives(&result);
        let init = &result["spec"]["template"]["spec"]["initContainers"];
        assert_eq!(init[0]["env"], json!([{"name": "X", "value": "1"}]));
        assert_eq!(init[0]["resources"], json!({"limits": {"cpu": "1"}}));
    }

    // --- status subresources and metadata -----------------------------------------------------

    #[test]
    fn deployment_status_conditions_merge_by_type() {
        let original = json!({"status": {"conditions": [
            {"type": "Available", "status": "False"},
            {"type": "Progressing", "status": "True"}
        ]}});
        let patch = json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}});
        let result = patched(DEPLOYMENT, &original, patch);
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}])
        );
    }

    #[test]
    fn node_status_merges_addresses_and_conditions_by_type() {
        let original = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
            "conditions": [{"type": "Ready", "status": "False"}]
        }});
        let patch = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]
        }});
        let result = patched(NODE, &original, patch);
        assert_eq!(
            result["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
        );
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}])
        );
    }

    #[test]
    fn pod_status_merges_conditions_and_pod_ips() {
        let original = json!({"status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "podIPs": [{"ip": "10.1.0.5"}]
        }});
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "PodScheduled"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "podIPs": [{"ip": "fd00::5"}]
        }});
        let result = patched(POD, &original, patch);
        assert_eq!(
            result["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
        assert_eq!(
            result["status"]["podIPs"],
            json!([{"ip": "fd00::5"}, {"ip": "10.1.0.5"}])
        );
    }

    #[test]
    fn job_and_pvc_status_conditions_merge_by_type() {
        let original = json!({"status": {"conditions": [{"type": "Complete", "status": "False"}]}});
        let patch = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let expected = json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            patched("io.k8s.api.batch.v1.Job", &original, patch.clone()),
            expected
        );
        assert_eq!(
            patched("io.k8s.api.core.v1.PersistentVolumeClaim", &original, patch),
            expected
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "kind": "ReplicaSet", "name": "a"}
        ]}});
        let patch = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "controller": true},
            {"uid": "u2", "kind": "Job", "name": "b"}
        ]}});
        let result = patched(POD, &original, patch);
        assert_eq!(
            result["metadata"]["ownerReferences"],
            json!([
                {"uid": "u1", "kind": "ReplicaSet", "name": "a", "controller": true},
                {"uid": "u2", "kind": "Job", "name": "b"}
            ])
        );
    }

    #[test]
    fn pdb_selector_is_replaced() {
        let original = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
        let patch = json!({"spec": {"selector": {"matchExpressions": []}}});
        let result = patched("io.k8s.api.policy.v1.PodDisruptionBudget", &original, patch);
        assert_eq!(result["spec"]["selector"], json!({"matchExpressions": []}));
    }

    #[test]
    fn additional_properties_carry_the_schema() {
        let mut defs = defs().clone();
        defs.insert(
            "example.Catalog".to_owned(),
            json!({"type": "object", "properties": {"specs": {
                "type": "object",
                "additionalProperties": {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}
            }}}),
        );
        let original = json!({"specs": {"one": {"containers": [{"name": "a", "image": "1"}]}}});
        let patch = json!({"specs": {"one": {"containers": [{"name": "a", "image": "2"}]}}});
        let result = apply(&original, &patch, Some("example.Catalog"), &defs).expect("applies");
        assert_eq!(
            result,
            json!({"specs": {"one": {"containers": [{"name": "a", "image": "2"}]}}})
        );
    }

    // --- no schema ----------------------------------------------------------------------------

    #[test]
    fn no_schema_behaves_like_json_merge_patch() {
        // RFC 7386, section 3.
        let original = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        let expected = json!({
            "title": "Hello!",
            "author": {"givenName": "John"},
            "tags": ["example"],
            "content": "This will be unchanged",
            "phoneNumber": "+01-123-456-7890"
        });
        assert_eq!(
            apply(&original, &patch, None, defs()).expect("applies"),
            expected
        );
        let unknown = apply(&original, &patch, Some("no.such.Definition"), defs());
        assert_eq!(unknown.expect("applies"), expected);
    }

    #[test]
    fn no_schema_still_honours_directives() {
        let original =
            json!({"a": {"x": 1, "y": 2}, "b": {"z": 3}, "c": {"k": 1, "l": 2}, "d": [1, 2, 3]});
        let patch = json!({
            "a": {"$patch": "replace", "w": 0},
            "b": {"$patch": "delete"},
            "c": {"$retainKeys": ["l"], "l": 5},
            "$deleteFromPrimitiveList/d": [2]
        });
        let result = apply(&original, &patch, None, defs()).expect("applies");
        assert_eq!(result, json!({"a": {"w": 0}, "c": {"l": 5}, "d": [1, 3]}));
    }

    #[test]
    fn non_object_original_is_treated_as_empty() {
        let result = apply(
            &Value::Null,
            &json!({"a": {"b": null, "c": 1}}),
            None,
            defs(),
        );
        assert_eq!(result.expect("applies"), json!({"a": {"c": 1}}));
    }

    // --- errors -------------------------------------------------------------------------------

    #[test]
    fn error_patch_not_an_object() {
        let error = patch_error(Some(DEPLOYMENT), &deployment(), json!([{"op": "add"}]));
        assert_eq!(
            error.to_string(),
            "strategic merge patch must be a json object, not an array"
        );
    }

    #[test]
    fn error_list_element_missing_merge_key() {
        let patch = pod_spec_patch(json!({"containers": [{"image": "x"}]}));
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert!(
            matches!(error, PatchError::MissingMergeKey { ref merge_key, .. } if merge_key == "name")
        );
        let delete = pod_spec_patch(json!({"containers": [{"$patch": "delete"}]}));
        let error = patch_error(Some(DEPLOYMENT), &deployment(), delete);
        assert!(matches!(error, PatchError::MissingMergeKey { .. }));
    }

    #[test]
    fn error_unknown_patch_directive() {
        let patch = json!({"metadata": {"labels": {"$patch": "foo"}}});
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert_eq!(error.to_string(), "unknown patch directive \"$patch: foo\"");
        let in_list = pod_spec_patch(json!({"containers": [{"$patch": "bar", "name": "app"}]}));
        let error = patch_error(Some(DEPLOYMENT), &deployment(), in_list);
        assert_eq!(error.to_string(), "unknown patch directive \"$patch: bar\"");
    }

    #[test]
    fn error_directives_with_wrong_types() {
        let cases = [
            json!({"$patch": 5}),
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            json!({"spec": {"strategy": {"$retainKeys": [1]}}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
            json!({"metadata": {"$setElementOrder/finalizers": {"a": 1}}}),
        ];
        for patch in cases {
            let error = patch_error(Some(DEPLOYMENT), &deployment(), patch.clone());
            assert!(
                matches!(error, PatchError::InvalidDirective { .. }),
                "{patch}: {error}"
            );
        }
        let malformed = json!({"metadata": {"$setElementOrder": []}});
        let error = patch_error(Some(DEPLOYMENT), &deployment(), malformed);
        assert_eq!(
            error.to_string(),
            "malformed directive key \"$setElementOrder\""
        );
    }

    #[test]
    fn error_order_mismatch() {
        let patch = pod_spec_patch(json!({
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "sidecar", "image": "a"}, {"name": "app", "image": "b"}]
        }));
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert!(matches!(error, PatchError::OrderMismatch { ref field } if field == "containers"));
    }

    #[test]
    fn error_mixed_list() {
        let patch = json!({"metadata": {"finalizers": [{"$patch": "replace"}]}});
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert_eq!(
            error.to_string(),
            "list \"finalizers\" mixes objects with other values"
        );
        let patch = pod_spec_patch(json!({"containers": ["app"]}));
        let error = patch_error(Some(DEPLOYMENT), &deployment(), patch);
        assert!(matches!(error, PatchError::MixedList { .. }));
    }
}
