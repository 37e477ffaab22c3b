//! Admission webhooks at the edge: the Mutating- and
//! ValidatingWebhookConfigurations mirrored from the store, and the HTTPS
//! calls a write makes to the webhooks that concern it. What to call and
//! what an answer means is decided in `admission::webhook`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use http_body_util::Full;
use serde_json::Value;
use tracing::Instrument as _;

use super::ApiState;
use super::admission::webhook::{self, Attributes, ClientConfig, Hook, Phase, Verdict};
use super::mirror::{self, Mirror};
use crate::api::ApiError;
use crate::store::{Event, EventKind, KeyValue, Store};

/// Where the admission configurations live in the store.
const PREFIX: &str = "/registry/admissionregistration.k8s.io/";

/// The two configuration resources' ranges, mirrored one by one.
const RANGES: [&str; 2] = [
    "/registry/admissionregistration.k8s.io/mutatingwebhookconfigurations/",
    "/registry/admissionregistration.k8s.io/validatingwebhookconfigurations/",
];

/// The host's trust store, for webhooks configured without a caBundle.
const HOST_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Stored configurations: (resource, name) → their webhooks.
type Configurations = BTreeMap<(String, String), Vec<Arc<Hook>>>;

/// The webhooks configured, by phase, in configuration-name order.
#[derive(Default)]
pub struct WebhookConfigs {
    configs: RwLock<Configurations>,
    mirror: std::sync::OnceLock<Mirror>,
}

impl WebhookConfigs {
    /// Starts mirroring the store's configurations (listed before it returns).
    pub async fn start(store: Arc<dyn Store>) -> crate::store::Result<Arc<WebhookConfigs>> {
        let configs = Arc::new(WebhookConfigs::default());
        let mirror = Mirror::start(store, &RANGES, configs.clone()).await?;
        let _ = configs.mirror.set(mirror);
        Ok(configs)
    }

    /// Waits until a configuration written at `revision` under `key` is in force.
    pub async fn caught_up(&self, key: &str, revision: crate::store::Revision) {
        if let Some(mirror) = self.mirror.get() {
            mirror.caught_up(key, revision).await;
        }
    }

    /// Whether any webhook is configured (most writes need not look further).
    pub fn any(&self) -> bool {
        self.configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|hooks| !hooks.is_empty())
    }

    /// The webhooks of `phase` whose rules match the write.
    fn matching(&self, phase: Phase, attrs: &Attributes) -> Vec<Arc<Hook>> {
        let configs = self.configs.read().unwrap_or_else(|p| p.into_inner());
        let mut hooks: Vec<Arc<Hook>> = configs
            .values()
            .flatten()
            .filter(|h| h.phase == phase && h.matches_rules(attrs))
            .cloned()
            .collect();
        hooks.sort_by(|a, b| a.configuration.cmp(&b.configuration));
        hooks
    }

    fn insert(&self, key: &str, value: &[u8]) {
        let Some((resource, name)) = parse_key(key) else {
            return;
        };
        let phase = match resource {
            "mutatingwebhookconfigurations" => Phase::Mutating,
            "validatingwebhookconfigurations" => Phase::Validating,
            _ => return,
        };
        let Ok(config) = serde_json::from_slice::<Value>(value) else {
            tracing::warn!(key, "unreadable webhook configuration ignored");
            return;
        };
        let hooks = webhook::hooks_of(phase, &config)
            .into_iter()
            .map(Arc::new)
            .collect();
        self.configs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((resource.to_string(), name.to_string()), hooks);
    }
}

/// (resource, name) of a key under [`PREFIX`].
fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(PREFIX)?.split_once('/')
}

impl mirror::Sink for WebhookConfigs {
    fn reset(&self, items: &[KeyValue]) {
        self.configs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for kv in items {
            self.insert(&kv.key, &kv.value);
        }
    }

    fn apply(&self, event: &Event) {
        match event.kind {
            EventKind::Deleted => {
                if let Some((resource, name)) = parse_key(&event.kv.key) {
                    self.configs
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(resource.to_string(), name.to_string()));
                }
            }
            EventKind::Created | EventKind::Updated => self.insert(&event.kv.key, &event.kv.value),
        }
    }
}

/// Runs the mutating webhooks for a write: each in turn sees the object as
/// the ones before it left it; `object` is patched in place. Those with
/// reinvocationPolicy IfNeeded are called once more when a later webhook
/// changed the object. Returns whether anything changed.
pub async fn mutate(
    state: &ApiState,
    attrs: &Attributes<'_>,
    object: &mut Value,
    warnings: &super::handlers::Warnings,
) -> Result<bool, ApiError> {
    let hooks = selected(state, Phase::Mutating, attrs).await?;
    let mut last_change = None;
    for (i, hook) in hooks.iter().enumerate() {
        if mutate_once(state, hook, attrs, object, warnings).await? {
            last_change = Some(i);
        }
    }
    if let Some(last) = last_change {
        for hook in hooks[..last].iter().filter(|h| h.reinvoke) {
            mutate_once(state, hook, attrs, object, warnings).await?;
        }
    }
    Ok(last_change.is_some())
}

/// Calls one mutating webhook with the object as it is now and applies its
/// patch; whether the object changed.
async fn mutate_once(
    state: &ApiState,
    hook: &Hook,
    attrs: &Attributes<'_>,
    object: &mut Value,
    warnings: &super::handlers::Warnings,
) -> Result<bool, ApiError> {
    let current = object.clone();
    let call_attrs = Attributes {
        object: attrs.object.map(|_| &current),
        ..*attrs
    };
    let Some(patch) = call(state, hook, &call_attrs, warnings).await? else {
        return Ok(false);
    };
    if attrs.object.is_none() {
        // A delete has no object to patch.
        return Ok(false);
    }
    let mut patched = current.clone();
    json_patch::patch_unsafe(&mut patched, &patch).map_err(|e| {
        ApiError::internal(format!(
            "applying the patch of admission webhook {:?}: {e}",
            hook.name
        ))
    })?;
    if patched == current {
        return Ok(false);
    }
    let meta = |v: &Value, f: &str| v.pointer(&format!("/metadata/{f}")).cloned();
    for field in ["name", "namespace", "uid"] {
        if meta(&patched, field) != meta(&current, field) {
            return Err(ApiError::internal(format!(
                "admission webhook {:?} changed metadata.{field}, which it may not",
                hook.name
            )));
        }
    }
    *object = patched;
    Ok(true)
}

/// Runs the validating webhooks for a write, all at once; the first refusal
/// (in configuration order) refuses the write.
pub async fn validate(
    state: &ApiState,
    attrs: &Attributes<'_>,
    warnings: &super::handlers::Warnings,
) -> Result<(), ApiError> {
    let hooks = selected(state, Phase::Validating, attrs).await?;
    let answers =
        futures::future::join_all(hooks.iter().map(|h| call(state, h, attrs, warnings))).await;
    answers
        .into_iter()
        .try_for_each(|answer| answer.map(|_| ()))
}

/// The webhooks of `phase` whose rules and selectors select the write.
async fn selected(
    state: &ApiState,
    phase: Phase,
    attrs: &Attributes<'_>,
) -> Result<Vec<Arc<Hook>>, ApiError> {
    let hooks = state.webhooks.matching(phase, attrs);
    let namespace_labels = match hooks.iter().any(|h| h.needs_namespace_labels(attrs)) {
        true => namespace_labels(state, attrs.namespace).await?,
        false => None,
    };
    Ok(hooks
        .into_iter()
        .filter(|h| h.selects(attrs, namespace_labels.as_ref()))
        .collect())
}

async fn namespace_labels(state: &ApiState, namespace: &str) -> Result<Option<Value>, ApiError> {
    let Some(rt) = state.registry.lookup("", "v1", "namespaces") else {
        return Ok(None);
    };
    let kv = state
        .store
        .get(&rt.key(None, namespace))
        .await
        .map_err(ApiError::internal)?;
    Ok(kv
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .and_then(|ns| ns.pointer("/metadata/labels").cloned()))
}

/// Calls one webhook; Ok(Some(patch)) when a mutating webhook changed the
/// object. A webhook that cannot be called refuses the write unless its
/// failurePolicy is Ignore.
async fn call(
    state: &ApiState,
    hook: &Hook,
    attrs: &Attributes<'_>,
    warnings: &super::handlers::Warnings,
) -> Result<Option<json_patch::Patch>, ApiError> {
    if let Some(refusal) = hook.refuses_dry_run(attrs) {
        return Err(refusal);
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let review = webhook::review(hook, attrs, &uid);
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(hook.timeout, post(state, hook, &review))
        .instrument(call_span(hook, attrs, &uid))
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "failed to call webhook: Post {:?}: context deadline exceeded",
            url(hook)
        )),
    };
    let verdict = answer.and_then(|answer| webhook::verdict(hook, &uid, &answer));
    tracing::debug!(webhook = %hook.name, elapsed_ms = started.elapsed().as_millis() as u64, "admission webhook called");
    match verdict {
        Ok(Verdict::Allowed {
            patch,
            warnings: given,
        }) => {
            given.into_iter().for_each(|w| warnings.push(w));
            Ok(patch)
        }
        Ok(Verdict::Denied {
            error,
            warnings: given,
        }) => {
            given.into_iter().for_each(|w| warnings.push(w));
            tracing::info!(webhook = %hook.name, message = %error, "rejected by admission webhook");
            Err(error)
        }
        Err(reason) if hook.fail_closed => {
            tracing::warn!(webhook = %hook.name, %reason, "failed calling webhook, failing closed");
            Err(webhook::call_failed(&hook.name, &reason))
        }
        Err(reason) => {
            tracing::warn!(webhook = %hook.name, %reason, "failed calling webhook, failing open");
            Ok(None)
        }
    }
}

/// With traces on, the span of one webhook call (upstream's names and
/// attributes); the call's `traceparent` is its.
fn call_span(hook: &Hook, attrs: &Attributes<'_>, uid: &str) -> tracing::Span {
    use crate::telemetry::traces;
    if !traces::on() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: traces::TARGET,
        "webhook",
        otel.name = match hook.phase {
            Phase::Mutating => "Call mutating webhook",
            Phase::Validating => "Call validating webhook",
        },
        configuration = %hook.configuration,
        webhook = %hook.name,
        resource = %attrs.resource,
        subresource = %attrs.subresource,
        operation = ?attrs.operation,
        UID = %uid,
    )
}

/// The URL a hook is called at (a Service's by its DNS name), with the timeout.
fn url(hook: &Hook) -> String {
    let base = match &hook.client {
        ClientConfig::Url(url) => url.clone(),
        ClientConfig::Service {
            namespace,
            name,
            path,
            port,
        } => format!("https://{name}.{namespace}.svc:{port}{path}"),
    };
    webhook::call_url(&base, hook.timeout)
}

/// POSTs the review and reads the AdmissionReview answered; Err is upstream's
/// "failed to call webhook" reason.
async fn post(state: &ApiState, hook: &Hook, review: &Value) -> Result<Value, String> {
    let url = url(hook);
    let fail = |e: &dyn std::fmt::Display| format!("failed to call webhook: Post {url:?}: {e}");
    let uri: http::Uri = url.parse().map_err(|e| fail(&e))?;
    if uri.scheme_str() != Some("https") {
        return Err(fail(&"webhooks are called over https only"));
    }
    let (server_name, targets) = match &hook.client {
        ClientConfig::Url(_) => {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            (
                host.to_string(),
                vec![(host.to_string(), uri.port_u16().unwrap_or(443))],
            )
        }
        ClientConfig::Service {
            namespace,
            name,
            port,
            ..
        } => {
            // The Service's ready endpoints, as k3s routes webhook calls
            // (--enable-aggregator-routing), the certificate checked for
            // the Service's DNS name.
            let targets =
                super::proxy::resolve::service(state, namespace, &format!("https:{name}:{port}"))
                    .await
                    .map_err(|e| fail(&e))?;
            (
                format!("{name}.{namespace}.svc"),
                targets.into_iter().map(|t| (t.host, t.port)).collect(),
            )
        }
    };
    let ca = match &hook.ca_bundle {
        Some(pem) => pem.clone(),
        None => std::fs::read_to_string(HOST_CA_FILE)
            .map_err(|e| fail(&format!("{HOST_CA_FILE}: {e}")))?,
    };
    let tls = crate::pki::tls::client_config(&ca, None).map_err(|e| fail(&format!("{e:#}")))?;
    let body = bytes::Bytes::from(review.to_string());
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut last_error = String::from("no endpoints");
    for (host, port) in targets {
        let mut request = http::Request::post(path)
            .header(
                http::header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or_default(),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| fail(&e))?;
        crate::telemetry::traces::propagate(request.headers_mut());
        match crate::pki::tls::request_once(&host, port, &server_name, tls.clone(), request, None)
            .await
        {
            Ok((status, answer)) if status.is_success() => {
                return serde_json::from_slice(&answer)
                    .map_err(|e| fail(&format!("decoding the answer: {e}")));
            }
            Ok((status, answer)) => {
                return Err(fail(&format!(
                    "the server responded with the status code {} ({})",
                    status.as_u16(),
                    String::from_utf8_lossy(&answer).trim()
                )));
            }
            Err(e) => last_error = format!("{e:#}"),
        }
    }
    Err(fail(&last_error))
}
