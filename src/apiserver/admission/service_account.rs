//! ServiceAccount admission (upstream's plugin): a pod runs as a service
//! account (`default` unless it names one) and, unless it or its account
//! opts out, gets the `kube-api-access-*` projected volume: a bound token,
//! the cluster CA (`kube-root-ca.crt`) and its namespace, mounted where
//! client libraries look for them.

use serde_json::{Value, json};

/// Where in-cluster clients find the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The token lifetime the volume asks for; the API server grants these
/// bound tokens a year (upstream's extended expiration), the kubelet
/// refreshes them.
pub const TOKEN_SECONDS: i64 = 3607;

const VOLUME_PREFIX: &str = "kube-api-access-";

/// Sets the pod's service account and, if it should have one, adds the
/// API access volume and its mounts. `account_automount` is the account's
/// `automountServiceAccountToken`, if the account exists and sets it.
pub fn admit(pod: &mut Value, account_automount: Option<bool>, suffix: &str) {
    if pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return;
    }
    let spec = &mut pod["spec"];
    let account = spec["serviceAccountName"]
        .as_str()
        .or_else(|| spec["serviceAccount"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(account);
    spec["serviceAccount"] = json!(account);
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or(account_automount)
        .unwrap_or(true);
    if !automount {
        return;
    }
    let existing = spec["volumes"].as_array().and_then(|volumes| {
        volumes.iter().find_map(|v| {
            v["name"]
                .as_str()
                .filter(|n| n.starts_with(VOLUME_PREFIX))
                .map(String::from)
        })
    });
    let name = match existing {
        Some(name) => name,
        None => {
            let name = format!("{VOLUME_PREFIX}{suffix}");
            if !spec["volumes"].is_array() {
                spec["volumes"] = json!([]);
            }
            if let Some(volumes) = spec["volumes"].as_array_mut() {
                volumes.push(volume(&name));
            }
            name
        }
    };
    for list in ["initContainers", "containers"] {
        for container in spec[list].as_array_mut().into_iter().flatten() {
            let mounted = container["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH));
            if mounted {
                continue;
            }
            if !container["volumeMounts"].is_array() {
                container["volumeMounts"] = json!([]);
            }
            if let Some(mounts) = container["volumeMounts"].as_array_mut() {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
            }
        }
    }
}

/// The projected volume, as upstream writes it.
fn volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_the_default_account_and_the_access_volume() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}});
        admit(&mut pod, None, "abcde");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["volumes"][0]["name"], "kube-api-access-abcde");
        assert_eq!(
            pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        for c in ["initContainers", "containers"] {
            let mounts = pod["spec"][c][0]["volumeMounts"]
                .as_array()
                .expect("mounts");
            assert!(
                mounts
                    .iter()
                    .any(|m| m["mountPath"] == MOUNT_PATH && m["readOnly"] == true)
            );
        }
        // Admitting again (an update) adds nothing.
        let once = pod.clone();
        admit(&mut pod, None, "zzzzz");
        assert_eq!(pod, once);
    }

    #[test]
    fn opting_out_keeps_the_pod_as_it_is() {
        let mut pod = json!({"spec": {"serviceAccountName": "app", "automountServiceAccountToken": false, "containers": [{"name": "c"}]}});
        admit(&mut pod, Some(true), "abcde");
        assert!(pod["spec"].get("volumes").is_none());
        let mut pod = json!({"spec": {"serviceAccountName": "app", "containers": [{"name": "c"}]}});
        admit(&mut pod, Some(false), "abcde");
        assert!(pod["spec"].get("volumes").is_none());
        assert_eq!(pod["spec"]["serviceAccount"], "app");
        let mut own = json!({"spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}});
        admit(&mut own, None, "abcde");
        assert_eq!(
            own["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
}
