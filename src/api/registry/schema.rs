//! JSON schemas of the built-in kinds, derived from the k8s-openapi types
//! (schemars). They feed the OpenAPI v3 documents (`kubectl explain`, apply's
//! validation), strict field validation and strategic merge patch.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::resources::ResourceType;

/// Definitions keyed by name (`io.k8s.api.apps.v1.Deployment`).
pub type Definitions = Map<String, Value>;

/// All built-in schemas plus which definition each served kind uses.
pub struct Schemas {
    definitions: Definitions,
    kinds: Vec<((String, String, String), String)>,
}

macro_rules! kinds {
    ($gen:ident, $kinds:ident; $( ($group:literal, $version:literal, $kind:literal, $ty:ty) ),* $(,)?) => {
        $(
            let schema = $gen.subschema_for::<$ty>();
            if let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
                $kinds.push((($group.to_string(), $version.to_string(), $kind.to_string()), name.to_string()));
            }
        )*
    };
}

impl Schemas {
    /// Generates every built-in schema (once, at start).
    pub fn builtin() -> Self {
        use k8s_openapi::api::*;
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut kinds = Vec::new();
        kinds!(generator, kinds;
            ("", "v1", "Namespace", core::v1::Namespace),
            ("", "v1", "Pod", core::v1::Pod),
            ("", "v1", "Binding", core::v1::Binding),
            ("", "v1", "Service", core::v1::Service),
            ("", "v1", "Endpoints", core::v1::Endpoints),
            ("", "v1", "ConfigMap", core::v1::ConfigMap),
            ("", "v1", "Secret", core::v1::Secret),
            ("", "v1", "ServiceAccount", core::v1::ServiceAccount),
            ("", "v1", "Node", core::v1::Node),
            ("", "v1", "Event", core::v1::Event),
            ("", "v1", "PersistentVolume", core::v1::PersistentVolume),
            ("", "v1", "PersistentVolumeClaim", core::v1::PersistentVolumeClaim),
            ("", "v1", "ReplicationController", core::v1::ReplicationController),
            ("", "v1", "ResourceQuota", core::v1::ResourceQuota),
            ("", "v1", "LimitRange", core::v1::LimitRange),
            ("", "v1", "PodTemplate", core::v1::PodTemplate),
            ("apps", "v1", "Deployment", apps::v1::Deployment),
            ("apps", "v1", "ReplicaSet", apps::v1::ReplicaSet),
            ("apps", "v1", "StatefulSet", apps::v1::StatefulSet),
            ("apps", "v1", "DaemonSet", apps::v1::DaemonSet),
            ("apps", "v1", "ControllerRevision", apps::v1::ControllerRevision),
            ("batch", "v1", "Job", batch::v1::Job),
            ("batch", "v1", "CronJob", batch::v1::CronJob),
            ("autoscaling", "v2", "HorizontalPodAutoscaler", autoscaling::v2::HorizontalPodAutoscaler),
            ("autoscaling", "v1", "HorizontalPodAutoscaler", autoscaling::v1::HorizontalPodAutoscaler),
            ("autoscaling", "v1", "Scale", autoscaling::v1::Scale),
            ("policy", "v1", "PodDisruptionBudget", policy::v1::PodDisruptionBudget),
            ("policy", "v1", "Eviction", policy::v1::Eviction),
            ("coordination.k8s.io", "v1", "Lease", coordination::v1::Lease),
            ("discovery.k8s.io", "v1", "EndpointSlice", discovery::v1::EndpointSlice),
            ("events.k8s.io", "v1", "Event", events::v1::Event),
            ("networking.k8s.io", "v1", "Ingress", networking::v1::Ingress),
            ("networking.k8s.io", "v1", "IngressClass", networking::v1::IngressClass),
            ("networking.k8s.io", "v1", "NetworkPolicy", networking::v1::NetworkPolicy),
            ("storage.k8s.io", "v1", "StorageClass", storage::v1::StorageClass),
            ("scheduling.k8s.io", "v1", "PriorityClass", scheduling::v1::PriorityClass),
            ("rbac.authorization.k8s.io", "v1", "Role", rbac::v1::Role),
            ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::v1::RoleBinding),
            ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::v1::ClusterRole),
            ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::v1::ClusterRoleBinding),
            ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", flowcontrol::v1::FlowSchema),
            ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", flowcontrol::v1::PriorityLevelConfiguration),
            ("certificates.k8s.io", "v1", "CertificateSigningRequest", certificates::v1::CertificateSigningRequest),
            ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", admissionregistration::v1::MutatingWebhookConfiguration),
            ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", admissionregistration::v1::ValidatingWebhookConfiguration),
            ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", apiext::CustomResourceDefinition),
            ("authentication.k8s.io", "v1", "TokenReview", authentication::v1::TokenReview),
            ("authentication.k8s.io", "v1", "TokenRequest", authentication::v1::TokenRequest),
            ("authentication.k8s.io", "v1", "SelfSubjectReview", authentication::v1::SelfSubjectReview),
            ("authorization.k8s.io", "v1", "SelfSubjectAccessReview", authorization::v1::SelfSubjectAccessReview),
            ("authorization.k8s.io", "v1", "SelfSubjectRulesReview", authorization::v1::SelfSubjectRulesReview),
            ("authorization.k8s.io", "v1", "SubjectAccessReview", authorization::v1::SubjectAccessReview),
        );
        let mut definitions = generator.take_definitions(true);
        for ((group, version, kind), name) in &kinds {
            if let Some(def) = definitions.get_mut(name).and_then(Value::as_object_mut) {
                let entry = json!({"group": group, "version": version, "kind": kind});
                let list = def
                    .entry("x-kubernetes-group-version-kind")
                    .or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.push(entry);
                }
            }
        }
        Self { definitions, kinds }
    }

    /// All definitions.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    /// The definition a served resource's objects follow.
    pub fn definition_name(&self, rt: &ResourceType) -> Option<String> {
        self.kinds
            .iter()
            .find(|((g, v, k), _)| *g == rt.group && *v == rt.version && *k == rt.kind)
            .map(|(_, name)| name.clone())
    }

    /// Dotted paths of fields the schema does not know.
    pub fn unknown_fields(&self, rt: &ResourceType, obj: &Value) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(custom) = &rt.custom {
            if let (Some(schema), Some(map)) = (&custom.schema, obj.as_object()) {
                for (key, value) in map {
                    if matches!(key.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if key == "metadata" {
                        let meta = self
                            .definitions
                            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
                        if let Some(meta) = meta {
                            self.walk(meta, value, key, &mut found, 0);
                        }
                        continue;
                    }
                    match schema.pointer(&format!(
                        "/properties/{}",
                        key.replace('~', "~0").replace('/', "~1")
                    )) {
                        Some(sub) => self.walk(sub, value, key, &mut found, 0),
                        None if preserves_unknown(schema) => {}
                        None => found.push(key.clone()),
                    }
                }
            }
            return found;
        }
        if let Some(name) = self.definition_name(rt)
            && let Some(schema) = self.definitions.get(&name)
        {
            self.walk(schema, obj, "", &mut found, 0);
        }
        found
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..32 {
            let reference = current.get("$ref").and_then(Value::as_str).or_else(|| {
                current
                    .get("allOf")
                    .and_then(Value::as_array)
                    .and_then(|all| all.first())
                    .and_then(|f| f.get("$ref"))
                    .and_then(Value::as_str)
            });
            match reference
                .and_then(|r| r.rsplit('/').next())
                .and_then(|n| self.definitions.get(n))
            {
                Some(next) => current = next,
                None => return current,
            }
        }
        current
    }

    fn walk(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        found: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 64 {
            return;
        }
        let schema = self.resolve(schema);
        if preserves_unknown(schema) {
            return;
        }
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if properties.is_none() && additional.is_none() {
                    return;
                }
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match (properties.and_then(|p| p.get(key)), additional) {
                        (Some(sub), _) | (None, Some(sub)) => {
                            self.walk(sub, child, &child_path, found, depth + 1)
                        }
                        (None, None) => found.push(child_path),
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item_schema, item, &format!("{path}[{i}]"), found, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::resources::Registry;

    #[test]
    fn finds_unknown_fields_through_refs() {
        let schemas = Schemas::builtin();
        let rt = Registry::new()
            .lookup("apps", "v1", "deployments")
            .expect("deployments");
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"replicas": 1, "foo": 1, "template": {"spec": {"containers": [{"name": "a", "image": "b", "bogus": true}]}}}
        });
        assert_eq!(
            schemas.unknown_fields(&rt, &deploy),
            ["spec.foo", "spec.template.spec.containers[0].bogus"]
        );
        let name = schemas.definition_name(&rt).expect("definition");
        assert_eq!(
            schemas.definitions()[&name]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
    }
}
