//! The Kubernetes API server: TLS listener, authentication, routing to
//! discovery, OpenAPI, health and the resource verbs.

pub mod admission;
pub mod apply;
pub mod audit;
pub mod audit_log;
pub mod authn;
pub mod authz;
pub mod body;
pub mod census;
pub mod client;
pub mod components;
pub mod convert;
pub mod discovery;
pub mod etcd_layout;
pub mod flowcontrol;
pub mod handlers;
pub mod hooks;
pub mod join;
pub mod kubelet;
pub mod mirror;
pub mod nodes;
pub mod openapi;
pub mod proxy;
pub mod request;
pub mod resource_metrics;
pub mod reviews;
pub mod secrets_encryption;
pub mod services;
pub mod static_files;
pub mod table;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::registry::resources::{Registry, ResourceType};
use crate::api::registry::schema::Schemas;
use crate::api::{ApiError, registry::object, values::meta};
use crate::pki::serviceaccount::TokenSigner;
use crate::store::{Revision, Store};
use crate::telemetry::Metrics;
use admission::webhook::{self, Operation};
use handlers::Request;
use request::FieldValidation;

/// Settings of the API server that handlers need.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `--service-cidr`.
    pub service_cidr: services::Cidr,
    /// `--cluster-cidr`: nodes' pod CIDRs are cut from it.
    pub cluster_cidr: services::Cidr,
    /// `--service-node-port-range`.
    pub node_port_range: (u16, u16),
    /// The address clients reach the server at (discovery's serverAddressByClientCIDRs).
    pub advertise: String,
    /// The cluster CA bundle (served at `/cacerts` to joining nodes).
    pub ca_pem: String,
    /// `--cluster-dns`, told to joining nodes.
    pub cluster_dns: String,
    /// `--cluster-domain`, told to joining nodes.
    pub cluster_domain: String,
    /// Whether nodes provision local-path volumes, told to joining nodes.
    pub local_storage: bool,
    /// Whether nodes enforce NetworkPolicies, told to joining nodes.
    pub network_policy: bool,
    /// Whether nodes run the ingress proxy, told to joining nodes.
    pub ingress: bool,
    /// `<data-dir>/server/static`, served at `/static/`.
    pub static_dir: Option<std::path::PathBuf>,
}

/// Shared state of every request.
pub struct ApiState {
    /// The object store.
    pub store: Arc<dyn Store>,
    /// Served resources.
    pub registry: Arc<Registry>,
    /// JSON schemas of built-in kinds.
    pub schemas: Arc<Schemas>,
    /// Settings.
    pub config: ApiConfig,
    /// Signs and verifies service-account tokens.
    pub tokens: Arc<TokenSigner>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Serialises ClusterIP / NodePort allocation.
    pub allocation: tokio::sync::Mutex<()>,
    /// Serialises creates that a ResourceQuota counts (usage is read, then written).
    pub quota: tokio::sync::Mutex<()>,
    /// TLS for calling kubelets (logs, exec, port-forward); None: not reachable.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// Decides who may do what (system:masters, node authorizer, RBAC).
    pub authorizer: Arc<authz::Authorizer>,
    /// The audit log, when on (`--audit-policy-file` and `--audit-log-path`).
    pub auditor: Option<Arc<audit_log::Auditor>>,
    /// Encryption at rest, when on (`--secrets-encryption`).
    pub secrets_encryption: Option<secrets_encryption::SecretsEncryption>,
    /// Pod Security defaults and exemptions (`--admission-control-config-file`).
    pub pod_security: admission::pod_security_config::PodSecurityConfig,
    /// The admission webhooks configured.
    pub webhooks: Arc<webhooks::WebhookConfigs>,
    /// API Priority and Fairness, or the max-in-flight limits with it off.
    pub flow_control: flowcontrol::FlowControl,
    /// Watch events decoded once for all the watches that receive them.
    pub watch_events: handlers::DecodedEvents,
}

/// The API router: used by the TLS listener and by tests as a tower service.
pub fn router(state: Arc<ApiState>) -> Router {
    let routes = Router::new()
        .route("/version", get(version))
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/metrics", get(metrics))
        .route("/api", get(discovery::core_versions))
        .route("/apis", get(discovery::groups))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::v3_root))
        .route("/openapi/v3/{*path}", get(openapi::v3_document))
        .route(
            &format!("{}/dump_priority_levels", flowcontrol::debug::PREFIX),
            get(flowcontrol::debug::dump_priority_levels),
        )
        .route(
            &format!("{}/dump_queues", flowcontrol::debug::PREFIX),
            get(flowcontrol::debug::dump_queues),
        )
        .route(
            &format!("{}/dump_requests", flowcontrol::debug::PREFIX),
            get(flowcontrol::debug::dump_requests),
        )
        .route(join::CACERTS_PATH, get(join::cacerts))
        .route(
            &format!("{}{{*path}}", static_files::PREFIX),
            get(static_files::serve),
        )
        .route(join::CONFIG_PATH, get(join::config))
        .route(
            join::NODE_PASSWORD_PATH,
            axum::routing::post(join::node_password),
        )
        .route(
            secrets_encryption::STATUS_PATH,
            get(secrets_encryption::status),
        )
        .route(
            secrets_encryption::ROTATE_PATH,
            axum::routing::post(secrets_encryption::rotate_keys),
        )
        .fallback(resource);
    // Outermost last: parse once, observe, authenticate (and impersonate),
    // then authorize; handlers see only allowed requests.
    guard(routes, &state)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::middleware::from_fn(parse_request))
        .layer(axum::middleware::from_fn(|req, next| {
            crate::telemetry::traces::serve("KubernetesAPI", req, next)
        }))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The audit ID, authentication, auditing, then authorization around
/// `routes` (which must run inside [`parse_request`]).
pub fn guard(routes: Router<Arc<ApiState>>, state: &Arc<ApiState>) -> Router<Arc<ApiState>> {
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            flowcontrol::filter,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_log::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authn::authenticate,
        ))
        .layer(axum::middleware::from_fn(audit_log::tag))
}

/// The Kubernetes version served: the one of the k8s-openapi feature kelp is built with.
pub const KUBERNETES_MINOR: &str = "33";

async fn version() -> Response {
    body::json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+kelp"),
            "gitCommit": option_env!("KELP_GIT_COMMIT").unwrap_or("unknown"),
            "gitTreeState": "clean",
            "buildDate": option_env!("KELP_BUILD_DATE").unwrap_or("1970-01-01T00:00:00Z"),
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", crate::platform::OS, crate::platform::arch()),
        }),
    )
}

async fn health(State(state): State<Arc<ApiState>>) -> Response {
    match state.store.current_revision().await {
        Ok(_) => (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            "ok",
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    (
        StatusCode::OK,
        [(
            "content-type",
            crate::telemetry::PROMETHEUS_TEXT_CONTENT_TYPE,
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Middleware: parses the request once into a [`request::RequestInfo`]
/// that every later layer and handler reads.
pub async fn parse_request(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let info = request::RequestInfo::new(req.method(), req.uri());
    req.extensions_mut().insert(Arc::new(info));
    next.run(req).await
}

async fn resource(
    State(state): State<Arc<ApiState>>,
    axum::Extension(user): axum::Extension<authn::User>,
    axum::Extension(info): axum::Extension<Arc<request::RequestInfo>>,
    req: axum::extract::Request,
) -> Response {
    let Some(path) = info.resource.clone() else {
        return discovery::group_or_version(&state, &info.path, req.headers())
            .unwrap_or_else(|e| e.into_response());
    };
    if path.subresource.as_deref() == Some("proxy")
        && let Some(proxy_path) = proxy::route(&state, req.uri().path())
    {
        // services|pods|nodes/proxy: the body streams to the backend unread.
        let (parts, body) = req.into_parts();
        return proxy::serve(&state, proxy_path, parts, body).await;
    }
    let (mut parts, body) = req.into_parts();
    if kubelet::is_stream(&path) {
        // exec, attach, port-forward: an upgraded connection relayed to the kubelet.
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        return kubelet::stream(&state, user, path, &parts, upgrade)
            .await
            .unwrap_or_else(|e| e.into_response());
    }
    let body = match body::read_limited(body).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let method = parts.method.clone();
    if path.name.is_none()
        && path.namespace.is_none()
        && !matches!(method, Method::GET | Method::POST | Method::DELETE)
    {
        return ApiError::MethodNotAllowed.into_response();
    }
    let query = info.query.clone();
    match handlers::dispatch(state, user, method, path, query, parts.headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Records `apiserver_request_total` and `apiserver_request_duration_seconds`,
/// and counts the request in flight (`apiserver_current_inflight_requests`,
/// or for watches, exec, proxies … `apiserver_longrunning_requests` until
/// their response body ends).
async fn observe(
    State(state): State<Arc<ApiState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let info = req.extensions().get::<Arc<request::RequestInfo>>().cloned();
    let method = req.method().clone();
    let is_apply = body::content_type(req.headers()).starts_with("application/apply-patch");
    let Some(info) = info else {
        return next.run(req).await;
    };
    // Upstream's metric verbs: the method, but LIST, WATCH and APPLY.
    let verb = match info.verb.as_str() {
        "list" => "LIST",
        "watch" => "WATCH",
        "patch" if is_apply => "APPLY",
        _ => method.as_str(),
    };
    // A resource request's target and scope, as its metrics label it.
    let target = info.resource.as_ref().map(|p| {
        let scope = match (&p.namespace, &p.name) {
            (_, Some(_)) => "resource",
            (Some(_), None) => "namespace",
            (None, None) => "cluster",
        };
        let subresource = p.subresource.as_deref().unwrap_or("");
        (
            (
                p.group.as_str(),
                p.version.as_str(),
                p.resource.as_str(),
                subresource,
            ),
            scope,
        )
    });
    let long_running = info.is_long_running();
    let apiserver = &state.metrics.apiserver;
    let held = match target {
        Some((target, scope)) if long_running => Some(apiserver.long_running(verb, target, scope)),
        _ if long_running => None,
        _ => Some(apiserver.inflight(!matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS
        ))),
    };
    let response = next.run(req).await;
    if let Some((target, scope)) = target {
        let code = response.status().as_u16();
        if response
            .extensions()
            .get::<flowcontrol::Terminated>()
            .is_some()
        {
            apiserver.terminated(verb, target, scope, code);
        }
        let (group, version, resource, subresource) = target;
        apiserver.observe(
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
            "apiserver",
            code,
            info.query.dry_run().unwrap_or(false),
            started.elapsed().as_secs_f64(),
        );
    }
    tracing::debug!(verb = %info.verb, path = %info.path, code = response.status().as_u16(), "request");
    match held {
        // A watch is in flight until its body ends (other long-running
        // requests, whose bodies are relayed or upgraded, until answered).
        Some(guard) if verb == "WATCH" && response.status().is_success() => response.map(|body| {
            use futures::StreamExt as _;
            axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _held = &guard;
                chunk
            }))
        }),
        _ => response,
    }
}

/// Adds `Warning: 299 - "…"` headers.
pub fn add_warnings(response: &mut Response, warnings: &[String]) {
    for warning in warnings {
        let text = format!(
            "299 - \"{}\"",
            warning.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
}

/// Which admission webhooks a call runs: upstream runs the mutating ones
/// among the mutating plugins and the validating ones among the validating
/// plugins (after Pod Security, before ResourceQuota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Mutating,
    Validating,
    Both,
}

impl ApiState {
    /// Field validation per `fieldValidation`: unknown and duplicate fields are
    /// errors (Strict), warnings (Warn) or ignored. Returns the warnings.
    pub fn validate_fields(
        &self,
        req: &Request,
        obj: &Value,
        duplicates: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let mode = req.query.field_validation()?;
        if mode == FieldValidation::Ignore {
            return Ok(vec![]);
        }
        let mut problems: Vec<String> = duplicates
            .iter()
            .map(|d| format!("duplicate field \"{d}\""))
            .collect();
        problems.extend(
            self.schemas
                .unknown_fields(&req.rt, obj)
                .into_iter()
                .map(|f| format!("unknown field \"{f}\"")),
        );
        if problems.is_empty() {
            return Ok(vec![]);
        }
        match mode {
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                problems.join(", ")
            ))),
            _ => Ok(problems),
        }
    }

    /// Namespaced creates need their namespace to exist (and not be terminating).
    pub async fn require_namespace(&self, ns: &str, req: &Request) -> Result<(), ApiError> {
        let Some(namespaces) = self.registry.lookup("", "v1", "namespaces") else {
            return Ok(());
        };
        let kv = self
            .store
            .get(&namespaces.key(None, ns))
            .await
            .map_err(ApiError::internal)?;
        match kv {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(kv) => {
                let terminating = serde_json::from_slice::<Value>(&kv.value)
                    .ok()
                    .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
                if terminating {
                    return Err(ApiError::forbidden(
                        &req.rt.group,
                        &req.rt.resource,
                        req.name(),
                        format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Admission for creates: who may write it, then allocations that need cluster state.
    pub async fn admit_create(
        &self,
        req: &Request,
        obj: &mut Value,
    ) -> Result<Vec<tokio::sync::MutexGuard<'_, ()>>, ApiError> {
        self.admit_identity(req, "create", obj, None)?;
        if req.rt.group == "certificates.k8s.io" {
            crate::api::registry::strategy::certificates::set_requestor(
                obj,
                &req.user.name,
                &req.user.groups,
            );
        }
        if req.rt.group.is_empty() && req.rt.resource == "pods" {
            self.admit_service_account(req, obj).await?;
        }
        self.admit_limit_ranges(req, obj).await?;
        self.admit_storage(req, obj).await?;
        // Upstream's order: mutating webhooks with the mutating plugins,
        // then the validating plugins (Pod Security before the webhooks).
        self.call_webhooks(req, Operation::Create, Some(obj), None, Phase::Mutating)
            .await?;
        self.admit_pod_security(req, obj, None).await?;
        self.call_webhooks(req, Operation::Create, Some(obj), None, Phase::Validating)
            .await?;
        let mut guards: Vec<_> = self.admit_quota(req, obj).await?.into_iter().collect();
        let row = hooks::of(&req.rt);
        if row.allocates {
            guards.push(self.allocation.lock().await);
        }
        row.hooks.before_write(self, req, obj, None).await?;
        Ok(guards)
    }

    /// ResourceQuota: a new object may not take its namespace past a
    /// quota's hard limits (usage counted from the store under a lock, so
    /// concurrent creates cannot both take the last unit). The lock is held
    /// until the object is written.
    async fn admit_quota(
        &self,
        req: &Request,
        obj: &Value,
    ) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, ApiError> {
        use crate::api::values::quota;
        let (Some(ns), Some(quotas_rt)) = (
            req.namespace(),
            self.registry.lookup("", "v1", "resourcequotas"),
        ) else {
            return Ok(None);
        };
        let quotas = self.stored_objects(&quotas_rt.key_prefix(Some(ns))).await?;
        if quotas.is_empty() {
            return Ok(None);
        }
        let (group, resource) = (req.rt.group.as_str(), req.rt.resource.as_str());
        let requested = quota::object_usage(group, resource, obj);
        let applicable: Vec<(String, quota::Usage)> = quotas
            .iter()
            .filter_map(|q| Some((meta::name(q).to_string(), quota::hard(q)?)))
            .filter(|(_, hard)| quota::concerns(hard, &requested))
            .collect();
        if applicable.is_empty() {
            return Ok(None);
        }
        let guard = self.quota.lock().await;
        let existing = self.stored_objects(&req.rt.key_prefix(Some(ns))).await?;
        let pod = (group.is_empty() && resource == "pods").then_some(obj);
        for (name, hard) in applicable {
            let used = quota::total(group, resource, &existing, &hard);
            quota::admit(&name, &hard, &used, &requested, pod).map_err(|message| {
                ApiError::forbidden(group, resource, meta::name(obj), message)
            })?;
        }
        Ok(Some(guard))
    }

    /// Admission for updates (`status_only`: a status write, which only
    /// the identity checks see).
    pub async fn admit_update(
        &self,
        req: &Request,
        new: &mut Value,
        old: &Value,
        status_only: bool,
    ) -> Result<(), ApiError> {
        self.admit_identity(req, "update", new, Some(old))?;
        if req.rt.group == "certificates.k8s.io" {
            admission::certificates::admit_update(
                &self.authorizer,
                &req.user,
                req.path.subresource.as_deref().unwrap_or(""),
                new,
                old,
            )?;
        }
        if !status_only && req.rt.group.is_empty() && req.rt.resource == "persistentvolumeclaims" {
            self.admit_resize(req, new, old).await?;
        }
        self.call_webhooks(
            req,
            Operation::Update,
            Some(new),
            Some(old),
            Phase::Mutating,
        )
        .await?;
        if !status_only {
            self.admit_pod_security(req, new, Some(old)).await?;
        }
        self.call_webhooks(
            req,
            Operation::Update,
            Some(new),
            Some(old),
            Phase::Validating,
        )
        .await?;
        if status_only {
            return Ok(());
        }
        let row = hooks::of(&req.rt);
        let _guard = match row.allocates {
            true => Some(self.allocation.lock().await),
            false => None,
        };
        row.hooks.before_write(self, req, new, Some(old)).await
    }

    /// Every stored object under `prefix`, decoded (what admission counts
    /// or checks against; undecodable values are skipped).
    pub async fn stored_objects(&self, prefix: &str) -> Result<Vec<Value>, ApiError> {
        let page = self
            .store
            .list(prefix, None, 0)
            .await
            .map_err(ApiError::internal)?;
        Ok(page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// LimitRanger: the namespace's LimitRanges default and bound what
    /// new pods and claims ask for.
    async fn admit_limit_ranges(&self, req: &Request, obj: &mut Value) -> Result<(), ApiError> {
        let claim = match (req.rt.group.as_str(), req.rt.resource.as_str()) {
            ("", "pods") => false,
            ("", "persistentvolumeclaims") => true,
            _ => return Ok(()),
        };
        let (Some(ns), Some(rt)) = (
            req.namespace(),
            self.registry.lookup("", "v1", "limitranges"),
        ) else {
            return Ok(());
        };
        let ranges = self.stored_objects(&rt.key_prefix(Some(ns))).await?;
        if ranges.is_empty() {
            return Ok(());
        }
        let errors = if claim {
            admission::limit_ranger::validate_claim(obj, &ranges)
        } else {
            admission::limit_ranger::default_pod(obj, &ranges);
            admission::limit_ranger::validate_pod(obj, &ranges)
        };
        match errors.is_empty() {
            true => Ok(()),
            false => Err(ApiError::forbidden(
                "",
                &req.rt.resource,
                meta::name(obj),
                admission::limit_ranger::message(&errors),
            )),
        }
    }

    /// DefaultStorageClass and StorageObjectInUseProtection for new claims
    /// and volumes; DefaultIngressClass for new Ingresses.
    async fn admit_storage(&self, req: &Request, obj: &mut Value) -> Result<(), ApiError> {
        use admission::storage;
        match (req.rt.group.as_str(), req.rt.resource.as_str()) {
            ("", "persistentvolumeclaims") => {
                if storage::has_no_class(obj)
                    && let Some(rt) = self
                        .registry
                        .lookup("storage.k8s.io", "v1", "storageclasses")
                {
                    let classes = self.stored_objects(&rt.key_prefix(None)).await?;
                    storage::default_storage_class(obj, &classes);
                }
                storage::protect(obj, storage::CLAIM_PROTECTION);
            }
            ("", "persistentvolumes") => storage::protect(obj, storage::VOLUME_PROTECTION),
            // DefaultIngressClass: an Ingress naming no class gets the default.
            ("networking.k8s.io", "ingresses")
                if obj
                    .pointer("/spec/ingressClassName")
                    .is_none_or(Value::is_null)
                    && obj
                        .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
                        .is_none() =>
            {
                if let Some(rt) = self
                    .registry
                    .lookup("networking.k8s.io", "v1", "ingressclasses")
                {
                    let classes = self.stored_objects(&rt.key_prefix(None)).await?;
                    if let Some(name) = meta::newest_default(
                        &classes,
                        &["ingressclass.kubernetes.io/is-default-class"],
                    )
                    .and_then(|c| c["metadata"]["name"].as_str())
                    {
                        obj["spec"]["ingressClassName"] = serde_json::json!(name);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// PersistentVolumeClaimResize: a claim grows only when bound and its
    /// class allows expansion.
    async fn admit_resize(&self, req: &Request, new: &Value, old: &Value) -> Result<(), ApiError> {
        use admission::storage;
        let class = match (
            storage::class_of(old),
            self.registry
                .lookup("storage.k8s.io", "v1", "storageclasses"),
        ) {
            (Some(name), Some(rt)) if !name.is_empty() => self
                .store
                .get(&rt.key(None, name))
                .await
                .map_err(ApiError::internal)?
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()),
            _ => None,
        };
        storage::check_resize(new, old, class.as_ref())
            .map_err(|message| ApiError::forbidden("", &req.rt.resource, meta::name(new), message))
    }

    /// ServiceAccount admission: the pod's account and API access volume.
    async fn admit_service_account(&self, req: &Request, pod: &mut Value) -> Result<(), ApiError> {
        let ns = req.namespace().unwrap_or("default");
        let account = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let automount = match self.registry.lookup("", "v1", "serviceaccounts") {
            Some(rt) => self
                .store
                .get(&rt.key(Some(ns), &account))
                .await
                .map_err(ApiError::internal)?
                .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
                .and_then(|sa| sa["automountServiceAccountToken"].as_bool()),
            None => None,
        };
        admission::service_account::admit(
            pod,
            automount,
            &crate::api::values::meta::random_suffix(),
        );
        Ok(())
    }

    /// Pod Security admission for pods and workloads with pod templates.
    async fn admit_pod_security(
        &self,
        req: &Request,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let kind = req.rt.kind.as_str();
        if kind == "Namespace" {
            let labels_changed = old.is_none_or(|old| {
                old.pointer("/metadata/labels") != new.pointer("/metadata/labels")
            });
            return match labels_changed {
                true => admission::pod_security_labels(new),
                false => Ok(()),
            };
        }
        let applies = kind == "Pod" || admission::pod_security::POD_TEMPLATE_KINDS.contains(&kind);
        let Some(ns) = req.namespace().filter(|_| applies) else {
            return Ok(());
        };
        let Some(namespaces) = self.registry.lookup("", "v1", "namespaces") else {
            return Ok(());
        };
        let Some(kv) = self
            .store
            .get(&namespaces.key(None, ns))
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(());
        };
        let namespace: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        let spec = match kind {
            "Pod" => Some(&new["spec"]),
            _ => admission::pod_security::pod_template_of(kind, new).map(|(_, spec)| spec),
        };
        if spec.is_some_and(|spec| self.pod_security.exempt(&req.user.name, ns, spec)) {
            return Ok(());
        }
        let namespace = self.pod_security.effective_namespace(&namespace);
        let name = meta::name(new);
        for warning in admission::pod_security(kind, name, &namespace, new, old)? {
            req.warnings.push(warning);
        }
        Ok(())
    }

    /// Admission for deletes.
    pub async fn admit_delete(&self, req: &Request, obj: &Value) -> Result<(), ApiError> {
        self.admit_identity(req, "delete", obj, Some(obj))?;
        self.call_webhooks(req, Operation::Delete, None, Some(obj), Phase::Both)
            .await
    }

    /// The admission webhooks of `phase` for a write: the mutating ones
    /// (their changes defaulted and validated again), the validating ones.
    async fn call_webhooks(
        &self,
        req: &Request,
        operation: Operation,
        mut object: Option<&mut Value>,
        old: Option<&Value>,
        phase: Phase,
    ) -> Result<(), ApiError> {
        if !self.webhooks.any() {
            return Ok(());
        }
        let rt = &req.rt;
        let dry_run = req.query.dry_run()?;
        let name = match (&object, old) {
            (Some(obj), _) => meta::name(obj).to_string(),
            (None, Some(old)) => meta::name(old).to_string(),
            (None, None) => req.name().to_string(),
        };
        let namespace = match rt.resource.as_str() {
            "namespaces" if rt.group.is_empty() => name.clone(),
            _ => req.namespace().unwrap_or_default().to_string(),
        };
        let base = webhook::Attributes {
            operation,
            group: &rt.group,
            version: &rt.version,
            resource: &rt.resource,
            subresource: req.path.subresource.as_deref().unwrap_or_default(),
            kind: &rt.kind,
            namespace: &namespace,
            name: &name,
            object: None,
            old_object: old,
            user: &req.user,
            dry_run,
        };
        match object.as_deref_mut() {
            _ if phase == Phase::Validating => {}
            Some(obj) => {
                let snapshot = obj.clone();
                let attrs = webhook::Attributes {
                    object: Some(&snapshot),
                    ..base
                };
                if webhooks::mutate(self, &attrs, obj, &req.warnings).await? {
                    crate::api::registry::strategy::default(rt, obj);
                    match old {
                        Some(old) => object::validate_after_strategy(rt, obj, old)?,
                        None => object::validate_created(rt, obj)?,
                    }
                }
            }
            None => {
                webhooks::mutate(self, &base, &mut Value::Null, &req.warnings).await?;
            }
        }
        if phase == Phase::Mutating {
            return Ok(());
        }
        let attrs = webhook::Attributes {
            object: object.as_deref(),
            ..base
        };
        webhooks::validate(self, &attrs, &req.warnings).await
    }

    /// The checks that depend on who writes: RBAC escalation and NodeRestriction.
    fn admit_identity(
        &self,
        req: &Request,
        verb: &str,
        new: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        if req.rt.group == "rbac.authorization.k8s.io" && verb != "delete" {
            authz::escalation::check(
                &self.authorizer,
                &req.user,
                &req.rt.resource,
                req.namespace(),
                new,
            )?;
        }
        if let Some(node) = authz::node::node_name(&req.user)
            && req.rt.group.is_empty()
        {
            admission::node_restriction::admit(&admission::node_restriction::Write {
                node,
                verb,
                resource: &req.rt.resource,
                subresource: req.path.subresource.as_deref().unwrap_or(""),
                name: meta::name(new),
                new,
                old,
            })?;
        }
        Ok(())
    }

    /// Hooks after a committed write at `revision`: CRDs change what is
    /// served; a policy write is in force before its writer hears back.
    pub async fn after_write(&self, rt: &ResourceType, obj: &Value, revision: Revision) {
        let graph_changes = hooks::of(rt).hooks.after_write(self, obj);
        self.policy_written(rt, revision, graph_changes).await;
    }

    /// Hooks after a committed delete at `revision`.
    pub async fn after_delete(&self, rt: &ResourceType, obj: &Value, revision: Revision) {
        let graph_changes = hooks::of(rt).hooks.after_delete(self, obj);
        self.policy_written(rt, revision, graph_changes).await;
    }

    /// Waits for the authorizers' mirrors to hold a write they judge by
    /// (`node_graph`: a pod write that changes the node graph).
    async fn policy_written(&self, rt: &ResourceType, revision: Revision, node_graph: bool) {
        if rt.group == "rbac.authorization.k8s.io" {
            self.authorizer
                .rbac()
                .caught_up(&rt.key_prefix(None), revision)
                .await;
        } else if rt.group == "admissionregistration.k8s.io" {
            self.webhooks
                .caught_up(&rt.key_prefix(None), revision)
                .await;
        } else if node_graph {
            self.authorizer.nodes().caught_up(revision).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// An API server state over a fresh store in `dir` (shared by handler tests).
    pub(crate) fn state(dir: &std::path::Path) -> Arc<ApiState> {
        let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
        Arc::new(ApiState {
            store: Arc::new(SqliteStore::open(&dir.join("state.db")).expect("store")),
            registry: Arc::new(Registry::new()),
            schemas: Arc::new(Schemas::builtin()),
            config: ApiConfig {
                service_cidr: "10.43.0.0/16".parse().expect("cidr"),
                cluster_cidr: "10.42.0.0/16".parse().expect("cidr"),
                node_port_range: (30000, 32767),
                static_dir: None,
                advertise: "127.0.0.1:6443".into(),
                ca_pem: String::new(),
                cluster_dns: "10.43.0.10".into(),
                cluster_domain: "cluster.local".into(),
                local_storage: true,
                network_policy: true,
                ingress: true,
            },
            tokens: Arc::new(TokenSigner::from_pem(&key).expect("signer")),
            metrics: Metrics::new(),
            allocation: tokio::sync::Mutex::new(()),
            quota: tokio::sync::Mutex::new(()),
            kubelet_tls: None,
            authorizer: Arc::new(authz::Authorizer::new(
                Arc::new(authz::policy::RbacPolicy::default()),
                Arc::new(authz::node::NodeGraph::default()),
            )),
            secrets_encryption: None,
            auditor: None,
            pod_security: Default::default(),
            webhooks: Default::default(),
            flow_control: flowcontrol::FlowControl::MaxInFlight(flowcontrol::InFlightLimits::new(
                0, 0,
            )),
            watch_events: Default::default(),
        })
    }

    /// The router over a fresh store in `dir` with the `default` namespace.
    pub(crate) async fn app_with_default_namespace(dir: &std::path::Path) -> Router {
        let app = router(state(dir));
        call(
            &app,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "default"}})),
        )
        .await;
        app
    }

    /// Sends one request through the router as the admin, without a socket.
    pub(crate) async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        call_with(app, method, uri, "application/json", body).await
    }

    /// Sends `body` of `content_type` through the router as the admin.
    pub(crate) async fn call_with(
        app: &Router,
        method: &str,
        uri: &str,
        content_type: &str,
        body: String,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        let admin = authn::User {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        };
        req.extensions_mut()
            .insert(authn::ConnectionIdentity(admin));
        let response = app.clone().oneshot(req).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watch_from_a_compacted_revision_gets_410() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let app = router(state.clone());
        let (status, _) = call(
            &app,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "default"}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"n": "0"}});
        let (status, body) = call(
            &app,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(cm),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let created: Value = serde_json::from_slice(&body).expect("json");
        let first_rv = created["metadata"]["resourceVersion"]
            .as_str()
            .expect("rv")
            .to_string();
        for n in 1..4 {
            let patch = json!({"data": {"n": n.to_string()}});
            let (status, _) = call_with(
                &app,
                "PATCH",
                "/api/v1/namespaces/default/configmaps/c",
                "application/merge-patch+json",
                patch.to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let current = state.store.current_revision().await.expect("rev");
        state.store.compact(current - 1).await.expect("compact");
        let uri =
            format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={first_rv}");
        let (status, body) = call(&app, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        let event: Value =
            serde_json::from_slice(body.split(|b| *b == b'\n').next().expect("line"))
                .expect("event");
        assert_eq!(event["type"], "ERROR");
        assert_eq!(
            (
                event["object"]["code"].as_i64(),
                event["object"]["reason"].as_str()
            ),
            (Some(410), Some("Expired"))
        );
        // From a retained revision the watch replays what followed it.
        let uri = format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={}&timeoutSeconds=1",
            current - 1
        );
        let (_, body) = call(&app, "GET", &uri, None).await;
        let event: Value =
            serde_json::from_slice(body.split(|b| *b == b'\n').next().expect("line"))
                .expect("event");
        assert_eq!(
            (
                event["type"].as_str(),
                event["object"]["data"]["n"].as_str()
            ),
            (Some("MODIFIED"), Some("3"))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_json_patch_moving_to_the_root_then_failing_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with_default_namespace(dir.path()).await;
        let cm = json!({"metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"k": "v"}});
        call(
            &app,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(cm),
        )
        .await;
        let patch = r#"[{"op":"move","from":"/metadata/labels","path":""},{"op":"remove","path":"/spec/x"}]"#;
        let (status, _) = call_with(
            &app,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/c",
            "application/json-patch+json",
            patch.into(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn list_pages_with_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = app_with_default_namespace(dir.path()).await;
        for n in 0..5 {
            let cm = json!({"metadata": {"name": format!("c{n}")}});
            call(
                &app,
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(cm),
            )
            .await;
        }
        let mut names = Vec::new();
        let mut uri = "/api/v1/namespaces/default/configmaps?limit=2".to_string();
        loop {
            let (status, body) = call(&app, "GET", &uri, None).await;
            assert_eq!(status, StatusCode::OK);
            let list: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(list["kind"], "ConfigMapList");
            names.extend(
                list["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string()),
            );
            match list["metadata"]["continue"].as_str() {
                Some(token) => {
                    uri = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}")
                }
                None => break,
            }
            if names.len() == 2 {
                // Writes between pages do not show: the pages read one revision.
                let extra = json!({"metadata": {"name": "c1a"}});
                call(
                    &app,
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    Some(extra),
                )
                .await;
                call(
                    &app,
                    "DELETE",
                    "/api/v1/namespaces/default/configmaps/c3",
                    None,
                )
                .await;
            }
        }
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn nodes_get_distinct_pod_cidrs_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(state(dir.path()));
        let mut cidrs = Vec::new();
        for name in ["edge-1", "edge-2"] {
            let (status, body) = call(
                &app,
                "POST",
                "/api/v1/nodes",
                Some(json!({"metadata": {"name": name}})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            let node: Value = serde_json::from_slice(&body).expect("json");
            cidrs.push(node["spec"]["podCIDR"].as_str().unwrap_or("").to_string());
            assert_eq!(node["spec"]["podCIDRs"][0], node["spec"]["podCIDR"]);
        }
        assert_eq!(cidrs, ["10.42.0.0/24", "10.42.1.0/24"]);
        let moved = json!({"metadata": {"name": "edge-1"}, "spec": {"podCIDR": "10.42.9.0/24"}});
        let (status, _) = call(&app, "PUT", "/api/v1/nodes/edge-1", Some(moved)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let relabelled = json!({"metadata": {"name": "edge-1", "labels": {"role": "edge"}}});
        let (status, body) = call(&app, "PUT", "/api/v1/nodes/edge-1", Some(relabelled)).await;
        assert_eq!(status, StatusCode::OK);
        let node: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(node["spec"]["podCIDR"], "10.42.0.0/24");
    }
}
