//! Impersonation (`kubectl --as`, `--as-group`): a user with the
//! `impersonate` verb on users, groups, service accounts, uids or user
//! extras acts as someone else for one request, as upstream.

use axum::http::HeaderMap;

use super::User;
use crate::api::ApiError;
use crate::apiserver::authz::{self, Attributes, Authorizer, Decision, ResourceAttributes};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether the request asks to impersonate.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

/// The user to act as, if `user` may impersonate what the headers ask.
pub fn impersonate(
    authorizer: &Authorizer,
    user: &User,
    headers: &HeaderMap,
) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let name = values(USER).into_iter().next().unwrap_or_default();
    let groups = values(GROUP);
    let uid = values(UID);
    let extras: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix(EXTRA)?;
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            Some((key, v.to_str().ok()?.to_string()))
        })
        .collect();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "requested impersonation without impersonating a user",
        ));
    }
    let check = |group: &str, resource: &str, subresource: &str, namespace: &str, name: &str| {
        let attrs = Attributes {
            user,
            verb: "impersonate",
            resource: Some(ResourceAttributes {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
                ..Default::default()
            }),
            path: "",
        };
        match authorizer.authorize(&attrs) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(reason) | Decision::NoOpinion(reason) => {
                Err(authz::forbidden(&attrs, &reason))
            }
        }
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => check("", "serviceaccounts", "", ns, sa)?,
        None => check("", "users", "", "", &name)?,
    }
    for group in &groups {
        check("", "groups", "", "", group)?;
    }
    for uid in &uid {
        check("authentication.k8s.io", "uids", "", "", uid)?;
    }
    for (key, value) in &extras {
        check("authentication.k8s.io", "userextras", key, "", value)?;
    }
    let mut out = User {
        name: name.clone(),
        groups,
    };
    if out.groups.is_empty()
        && let Some((ns, _)) = service_account
    {
        out.groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    let implied = if name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out.groups.iter().any(|g| g == implied) {
        out.groups.push(implied.into());
    }
    Ok(out)
}
