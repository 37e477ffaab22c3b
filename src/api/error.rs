//! API errors and their one mapping to `metav1.Status` (code, reason, message
//! shape as upstream's `k8s.io/apimachinery/pkg/api/errors`).

use serde_json::{Value, json};

/// One field-level problem, as in a 422 Invalid's `details.causes`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Upstream cause reason, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: &'static str,
    /// Dotted path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// Text after the field, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    /// A field has an invalid value.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", render_value(value)),
        }
    }

    /// A value is not one of the supported ones.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                list.join(", ")
            ),
        }
    }

    /// A value that must be unique is repeated.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", render_value(value)),
        }
    }

    /// A field may not be changed or set.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// Every error the API server answers with. Built by the named constructors so the
/// wording matches upstream; mapped to a Status only in [`ApiError::status`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 404 for a named object.
    #[error("{} \"{name}\" not found", qualified(.group, .resource))]
    NotFound {
        /// API group ("" for core).
        group: String,
        /// Plural resource.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 404 for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    NoSuchPath,
    /// 409 on create of an existing name.
    #[error("{} \"{name}\" already exists", qualified(.group, .resource))]
    AlreadyExists {
        /// API group ("" for core).
        group: String,
        /// Plural resource.
        resource: String,
        /// Object name.
        name: String,
    },
    /// 409 on a stale resourceVersion or an apply conflict.
    #[error("Operation cannot be fulfilled on {} \"{name}\": {detail}", qualified(.group, .resource))]
    Conflict {
        /// API group ("" for core).
        group: String,
        /// Plural resource.
        resource: String,
        /// Object name.
        name: String,
        /// What went wrong, after the colon.
        detail: String,
        /// Field-level causes.
        causes: Vec<FieldError>,
    },
    /// 422 with field causes.
    #[error("{} \"{name}\" is invalid: {}", qualified_kind(.group, .kind), render_causes(.causes))]
    Invalid {
        /// API group ("" for core).
        group: String,
        /// Kind.
        kind: String,
        /// Object name.
        name: String,
        /// Field-level causes.
        causes: Vec<FieldError>,
    },
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403, shaped as upstream's `NewForbidden`: `<resource.group> "<name>" is
    /// forbidden: <detail>` (no resource: `forbidden: <detail>`).
    #[error("{}", forbidden_message(.group, .resource, .name, .detail))]
    Forbidden {
        /// API group ("" for core).
        group: String,
        /// Plural resource ("" for a non-resource path).
        resource: String,
        /// Object name ("" for collections).
        name: String,
        /// Why, after the colon.
        detail: String,
    },
    /// 405.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406.
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    /// 410 for a compacted resourceVersion.
    #[error("too old resource version: {requested} ({current})")]
    Expired {
        /// The resourceVersion asked for.
        requested: i64,
        /// The oldest still retained.
        current: i64,
    },
    /// 413.
    #[error("the request is too large: {0}")]
    TooLarge(String),
    /// 415.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )]
    UnsupportedMediaType,
    /// 429: try again later (an eviction a disruption budget holds back).
    #[error("{message}")]
    TooManyRequests {
        /// The whole message.
        message: String,
        /// Seconds to wait, when known (`Retry-After`).
        retry_after_seconds: Option<u32>,
        /// Why, as Status causes.
        causes: Vec<FieldError>,
    },
    /// 500; the detail is logged, not shown in full.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 503.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A Status written by someone else and passed on (an admission
    /// webhook's refusal): its code, reason and details as given.
    #[error("{message}")]
    Passed {
        /// HTTP status code (400–599).
        code: u16,
        /// `reason`, possibly empty.
        reason: String,
        /// The whole message.
        message: String,
        /// `details`, if given.
        details: Option<Value>,
    },
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn forbidden_message(group: &str, resource: &str, name: &str, detail: &str) -> String {
    match (resource, name) {
        ("", _) => format!("forbidden: {detail}"),
        (_, "") => format!("{} is forbidden: {detail}", qualified(group, resource)),
        _ => format!(
            "{} \"{name}\" is forbidden: {detail}",
            qualified(group, resource)
        ),
    }
}

fn qualified_kind(group: &str, kind: &str) -> String {
    qualified(group, kind)
}

fn render_causes(causes: &[FieldError]) -> String {
    match causes {
        [one] => one.render(),
        many => format!(
            "[{}]",
            many.iter()
                .map(FieldError::render)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl ApiError {
    /// 404 for a named object of `group`/`resource`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::NotFound {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::AlreadyExists {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        Self::Conflict {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            detail: "the object has been modified; please apply your changes to the latest version and try again"
                .into(),
            causes: vec![],
        }
    }

    /// 422 Invalid with causes.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        Self::Invalid {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            causes,
        }
    }

    /// 403 Forbidden for `group`/`resource` (and `name`, if one), with the reason after the colon.
    pub fn forbidden(group: &str, resource: &str, name: &str, detail: impl Into<String>) -> Self {
        Self::Forbidden {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            detail: detail.into(),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// HTTP status code and `reason`.
    pub fn code_and_reason(&self) -> (u16, &str) {
        match self {
            Self::Passed { code, reason, .. } => (*code, reason),
            Self::NotFound { .. } | Self::NoSuchPath => (404, "NotFound"),
            Self::AlreadyExists { .. } => (409, "AlreadyExists"),
            Self::Conflict { .. } => (409, "Conflict"),
            Self::Invalid { .. } => (422, "Invalid"),
            Self::BadRequest(_) => (400, "BadRequest"),
            Self::Unauthorized => (401, "Unauthorized"),
            Self::Forbidden { .. } => (403, "Forbidden"),
            Self::MethodNotAllowed => (405, "MethodNotAllowed"),
            Self::NotAcceptable(_) => (406, "NotAcceptable"),
            Self::Expired { .. } => (410, "Expired"),
            Self::TooLarge(_) => (413, "RequestEntityTooLarge"),
            Self::UnsupportedMediaType => (415, "UnsupportedMediaType"),
            Self::TooManyRequests { .. } => (429, "TooManyRequests"),
            Self::Internal(_) => (500, "InternalError"),
            Self::ServiceUnavailable(_) => (503, "ServiceUnavailable"),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code,
        });
        if reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            // omitempty, as upstream's Status
            map.remove("reason");
        }
        let details = match self {
            Self::NotFound {
                group,
                resource,
                name,
            }
            | Self::AlreadyExists {
                group,
                resource,
                name,
            }
            | Self::Forbidden {
                group,
                resource,
                name,
                ..
            }
            | Self::Conflict {
                group,
                resource,
                name,
                ..
            } => {
                let mut d = json!({"name": name, "group": group, "kind": resource});
                if let Self::Conflict { causes, .. } = self
                    && !causes.is_empty()
                {
                    d["causes"] = causes_json(causes);
                }
                Some(d)
            }
            Self::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(
                json!({"name": name, "group": group, "kind": kind, "causes": causes_json(causes)}),
            ),
            Self::TooManyRequests {
                retry_after_seconds,
                causes,
                ..
            } => {
                let mut d = json!({});
                if let Some(seconds) = retry_after_seconds {
                    d["retryAfterSeconds"] = json!(seconds);
                }
                if !causes.is_empty() {
                    d["causes"] = causes_json(causes);
                }
                Some(d)
            }
            Self::Passed { details, .. } => details.clone(),
            _ => None,
        };
        if let Some(mut details) = details {
            if let Some(map) = details.as_object_mut() {
                map.retain(|_, v| v.as_str() != Some(""));
            }
            status["details"] = details;
        }
        status
    }
}

fn causes_json(causes: &[FieldError]) -> Value {
    causes
        .iter()
        .map(|c| match c.field.is_empty() {
            // omitempty, as upstream's StatusCause
            true => json!({"reason": c.reason, "message": c.message}),
            false => json!({"reason": c.reason, "message": c.message, "field": c.field}),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_group_and_resource() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.to_string(), "deployments.apps \"web\" not found");
        let status = err.status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "deployments");
        assert_eq!(
            ApiError::not_found("", "pods", "x").to_string(),
            "pods \"x\" not found"
        );
        assert!(
            ApiError::not_found("", "pods", "x").status()["details"]
                .get("group")
                .is_none()
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let one = ApiError::invalid("", "ConfigMap", "x", vec![FieldError::required("data", "")]);
        assert_eq!(
            one.to_string(),
            "ConfigMap \"x\" is invalid: data: Required value"
        );
        let two = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                FieldError::required("a", ""),
                FieldError::invalid("b", &json!(-1), "must be positive"),
            ],
        );
        assert_eq!(
            two.to_string(),
            "Deployment.apps \"web\" is invalid: [a: Required value, b: Invalid value: -1: must be positive]"
        );
        assert_eq!(two.status()["details"]["causes"][1]["field"], "b");
        assert_eq!(two.code_and_reason(), (422, "Invalid"));
    }

    #[test]
    fn every_variant_maps_to_a_code() {
        let all = [
            ApiError::NoSuchPath,
            ApiError::conflict("apps", "deployments", "web"),
            ApiError::bad_request("x"),
            ApiError::Unauthorized,
            ApiError::forbidden("", "pods", "", "no"),
            ApiError::MethodNotAllowed,
            ApiError::NotAcceptable("application/json".into()),
            ApiError::Expired {
                requested: 1,
                current: 5,
            },
            ApiError::TooLarge("x".into()),
            ApiError::UnsupportedMediaType,
            ApiError::TooManyRequests {
                message: "slow down".into(),
                retry_after_seconds: Some(1),
                causes: vec![],
            },
            ApiError::internal("boom"),
            ApiError::ServiceUnavailable("later".into()),
        ];
        let codes: Vec<u16> = all.iter().map(|e| e.code_and_reason().0).collect();
        assert_eq!(
            codes,
            [
                404, 409, 400, 401, 403, 405, 406, 410, 413, 415, 429, 500, 503
            ]
        );
        assert!(
            all[1]
                .to_string()
                .starts_with("Operation cannot be fulfilled on deployments.apps \"web\"")
        );
    }
}
