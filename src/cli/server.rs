//! `kelp server`: opens the store, makes credentials, bootstraps the default
//! objects and serves the API until SIGTERM/SIGINT.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::ServerArgs;
use crate::api::registry::resources::Registry;
use crate::api::registry::schema::Schemas;
use crate::apiserver::authn::User;
use crate::apiserver::{ApiConfig, ApiState, handlers, router};
use crate::http::serve;
use crate::pki::reloadable::ReloadableCert;
use crate::pki::serviceaccount::TokenSigner;
use crate::pki::{ClusterPki, ServingNames, write_file_mode};
use crate::store::sqlite::SqliteStore;
use crate::telemetry::Metrics;

/// Runs the server until a signal.
pub fn run(args: ServerArgs) -> Result<()> {
    let telemetry = args.telemetry.clone();
    super::node::run_daemon(&telemetry, |notifier| serve_api(args, notifier))
}

async fn serve_api(args: ServerArgs, notifier: super::notify::Notifier) -> Result<()> {
    let started = std::time::Instant::now();
    let server_dir = args.data_dir.join("server");
    let endpoint = crate::store::Endpoint::parse(
        args.datastore_endpoint.as_deref(),
        &server_dir.join("db").join("state.db"),
    )
    .map_err(|e| anyhow::anyhow!("--datastore-endpoint {e}"))?;
    let metrics = Metrics::new();
    let shared = !matches!(endpoint, crate::store::Endpoint::Sqlite(_));
    let backend = open_store(&endpoint, &args, &metrics).await?;
    let backend: Arc<dyn crate::store::Store> = Arc::new(
        crate::store::observed::ObservedStore::new(backend, endpoint.kind(), &metrics),
    );
    if let crate::store::Endpoint::Sqlite(db) = &endpoint
        && !args.etcd_disable_snapshots
    {
        let cron = crate::store::snapshot::parse_cron(&args.etcd_snapshot_schedule_cron)
            .map_err(|e| anyhow::anyhow!("--etcd-snapshot-schedule-cron {e}"))?;
        tokio::spawn(crate::store::snapshot::run_schedule(
            crate::store::snapshot::Schedule {
                db: db.clone(),
                dir: super::store::snapshot_dir(&args.data_dir, args.etcd_snapshot_dir.as_ref()),
                prefix: "etcd-snapshot".into(),
                node: super::node::hostname().to_lowercase(),
                cron,
                retention: args.etcd_snapshot_retention,
            },
        ));
    }
    // Servers sharing a datastore share the cluster's credentials through
    // it (sealed with the join token), installed before anything reads them.
    let passphrase = if shared {
        Some(shared_passphrase(&args, &server_dir)?)
    } else {
        anyhow::ensure!(
            args.server.is_none(),
            "--server: another server is joined through the datastore both share: give both the same --datastore-endpoint (postgres:// or etcd); run `kelp agent --server …` to add a node"
        );
        None
    };
    let joined = match &passphrase {
        Some(passphrase) => install_shared_credentials(&backend, &server_dir, passphrase).await?,
        None => false,
    };
    anyhow::ensure!(
        args.server.is_none() || joined,
        "--server: the datastore holds no cluster yet; start the first server on it first"
    );
    let (store, secrets_encryption) = if args.secrets_encryption {
        let file = server_dir.join("cred").join("encryption-config.json");
        if !file.exists() {
            let text = crate::store::encryption::generate_config(
                crate::store::encryption::K3S_INITIAL_KEY_NAME,
            );
            write_file_mode(&file, &text, 0o600)?;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let config = crate::store::encryption::EncryptionConfig::parse(&text)
            .with_context(|| format!("{}", file.display()))?;
        let encrypted = Arc::new(crate::store::encrypted::EncryptedStore::new(
            backend, config,
        ));
        let store: Arc<dyn crate::store::Store> = encrypted.clone();
        (
            store,
            Some(crate::apiserver::secrets_encryption::SecretsEncryption {
                store: encrypted,
                file,
                rotating: tokio::sync::Mutex::new(()),
                reloads: crate::apiserver::secrets_encryption::ReloadMetrics::new(
                    &metrics,
                    &super::node::hostname(),
                ),
                shared: passphrase.as_ref().map(|passphrase| {
                    crate::apiserver::secrets_encryption::SharedBootstrap {
                        server_dir: server_dir.clone(),
                        passphrase: passphrase.clone(),
                    }
                }),
            }),
        )
    } else {
        (backend, None)
    };
    let hostname = super::node::hostname();
    let node_ip = args.node.ip(args.advertise_address.as_deref());
    let node_name = args.node.name();
    let service_cidr: crate::apiserver::services::Cidr = args
        .service_cidr
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--service-cidr: {e}"))?;
    let mut names = ServingNames {
        dns: vec![hostname.clone()],
        ips: vec![IpAddr::V4(service_cidr.nth(1))],
    };
    names.ips.push(node_ip);
    names.ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    for san in &args.tls_san {
        match san.parse::<IpAddr>() {
            Ok(ip) => names.ips.push(ip),
            Err(_) => names.dns.push(san.clone()),
        }
    }
    let pki = ClusterPki::load_or_create(&server_dir.join("tls"), &names)?;
    if let Some(passphrase) = &passphrase
        && !joined
    {
        publish_shared_credentials(&store, &server_dir, passphrase).await?;
    }
    for component in &args.disable {
        anyhow::ensure!(
            DISABLEABLE.contains(&component.as_str()),
            "--disable {component:?}: kelp can disable: {}",
            DISABLEABLE.join(", ")
        );
    }
    let enabled = |component: &str| !args.disable.iter().any(|c| c == component);
    let cluster = crate::agent::ClusterSettings {
        cluster_cidr: args.cluster_cidr.clone(),
        cluster_dns: args.cluster_dns.clone(),
        cluster_domain: args.cluster_domain.clone(),
        local_storage: enabled("local-storage"),
        network_policy: enabled("network-policy"),
        ingress: enabled("ingress"),
    };
    let mode = u32::from_str_radix(args.write_kubeconfig_mode.trim_start_matches("0o"), 8)
        .context("--write-kubeconfig-mode")?;
    // The admin kubeconfig reaches this server where it listens: loopback
    // when it listens everywhere (or there), else the one address it binds.
    let local_address = match args.bind_address.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    };
    let server_url = format!(
        "https://{}",
        std::net::SocketAddr::new(local_address, args.https_listen_port)
    );
    write_file_mode(
        &args.write_kubeconfig,
        &pki.admin_kubeconfig(&server_url),
        mode,
    )?;
    // Renewed while running: TLS configurations hold these by reference.
    let serving_cert = ReloadableCert::from_pem(&pki.serving_cert, &pki.serving_key)?;
    let admin_cert = ReloadableCert::from_pem(&pki.admin_cert, &pki.admin_key)?;
    tokio::spawn(renew_certificates(
        pki.clone(),
        names.clone(),
        serving_cert.clone(),
        admin_cert.clone(),
        (args.write_kubeconfig.clone(), server_url.clone(), mode),
    ));
    let (low, high) = args
        .service_node_port_range
        .split_once('-')
        .context("--service-node-port-range must be LOW-HIGH")?;
    let auditor = match (&args.audit_policy_file, &args.audit_log_path) {
        (Some(policy), Some(log)) => Some(Arc::new(
            crate::apiserver::audit_log::Auditor::open(
                policy,
                log,
                args.audit_log_maxsize,
                args.audit_log_maxbackup,
                args.audit_log_maxage,
            )
            .context("--audit-policy-file / --audit-log-path")?,
        )),
        (None, None) => None,
        _ => bail!("--audit-policy-file and --audit-log-path go together"),
    };
    let authorizer = Arc::new(
        crate::apiserver::authz::Authorizer::new(
            crate::apiserver::authz::policy::RbacPolicy::start(store.clone()).await?,
            crate::apiserver::authz::node::NodeGraph::start(store.clone()).await?,
        )
        .with_modes(args.authorization_mode.clone()),
    );
    let webhooks = crate::apiserver::webhooks::WebhookConfigs::start(store.clone()).await?;
    let flow_control = flow_control(&args, &store, &metrics).await?;
    let state = Arc::new(ApiState {
        store,
        registry: Arc::new(Registry::new()),
        schemas: Arc::new(Schemas::builtin()),
        config: ApiConfig {
            service_cidr,
            cluster_cidr: args
                .cluster_cidr
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--cluster-cidr: {e}"))?,
            node_port_range: (
                low.parse().context("node port range")?,
                high.parse().context("node port range")?,
            ),
            advertise: format!("{node_ip}:{}", args.https_listen_port),
            ca_pem: pki.ca_cert.clone(),
            cluster_dns: args.cluster_dns.clone(),
            cluster_domain: args.cluster_domain.clone(),
            local_storage: cluster.local_storage,
            network_policy: cluster.network_policy,
            ingress: cluster.ingress,
            static_dir: Some(server_dir.join("static")),
        },
        tokens: Arc::new(TokenSigner::from_pem(&pki.service_account_key)?),
        metrics,
        allocation: tokio::sync::Mutex::new(()),
        quota: tokio::sync::Mutex::new(()),
        kubelet_tls: Some(crate::apiserver::kubelet::client_config(
            &pki,
            admin_cert.clone(),
        )?),
        authorizer,
        secrets_encryption,
        auditor,
        pod_security: match &args.admission_control_config_file {
            Some(file) => crate::apiserver::admission::pod_security_config::PodSecurityConfig::from_admission_file(file)
                .map_err(|e| anyhow::anyhow!("--admission-control-config-file: {e}"))?,
            None => Default::default(),
        },
        webhooks,
        flow_control,
        watch_events: Default::default(),
    });
    load_custom_resources(&state).await?;
    if !args.etcd_compaction_interval.is_zero() {
        tokio::spawn(crate::store::compaction::run(
            state.store.clone(),
            args.etcd_compaction_interval,
        ));
    }
    bootstrap(&state, service_cidr, args.https_listen_port).await?;
    if cluster.ingress {
        // kelp's IngressClass, the default (k3s ships Traefik's).
        create_if_missing(
            &state,
            "networking.k8s.io",
            "ingressclasses",
            None,
            crate::ingress::ingress_class(),
        )
        .await?;
    }
    if cluster.local_storage {
        // The default class, as k3s's local-storage manifest ships it.
        create_if_missing(
            &state,
            "storage.k8s.io",
            "storageclasses",
            None,
            crate::local_storage::storage_class(),
        )
        .await?;
    }
    let apiserver = administrator(&state, "system:apiserver");
    if shared {
        tokio::spawn(crate::apiserver::services::reconcile_kubernetes_endpoints(
            apiserver,
            node_ip,
            args.https_listen_port,
        ));
    } else {
        tokio::spawn(crate::apiserver::services::publish_kubernetes_endpoints(
            apiserver,
            node_ip,
            args.https_listen_port,
        ));
    }
    tokio::spawn(crate::apiserver::census::run(state.clone()));
    tokio::spawn(crate::apiserver::flowcontrol::maintain(state.clone()));
    crate::apiserver::authz::bootstrap::reconcile(&state)
        .await
        .map_err(|e| anyhow::anyhow!("reconciling the default RBAC policy: {e}"))?;
    let token = super::node::join_token(&args.token, &args.token_file)?;
    super::token::ensure_server_tokens(&state, &server_dir, token, args.agent_token.clone())
        .await?;
    let tls = crate::pki::tls::server_config(&pki.ca_cert, serving_cert)?;
    let addr = format!("{}:{}", args.bind_address, args.https_listen_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(address = %addr, elapsed_ms = started.elapsed().as_millis() as u64, kubeconfig = %args.write_kubeconfig.display(), "kelp server is ready");
    crate::apiserver::components::spawn(
        crate::apiserver::components::CONTROLLER_MANAGER_PORT,
        tls.clone(),
        crate::apiserver::components::router(state.clone()),
    )
    .await;
    // The components, started from this one list and stopped together.
    let mut components = crate::runtime::Components::new();
    let controllers_state = state.clone();
    let identities: crate::controllers::Identities = Arc::new(move |controller: &str| {
        crate::apiserver::client::in_process_with_reader(
            controllers_state.clone(),
            User::service_account("kube-system", controller),
            User {
                name: "system:kube-controller-manager".into(),
                groups: vec!["system:authenticated".into()],
            },
        )
    });
    // One watch cache per kind for the controllers and the scheduler. Its
    // lists and watches go as the controller-manager (any identity's
    // client lists as it).
    let informers = crate::runtime::Informers::new(identities("shared-informers"));
    let controller_manager = crate::controllers::ControllerManager::new(
        identities,
        informers.clone(),
        (
            pki.ca_cert.clone(),
            pki.ca_key.clone(),
            pki.ca_chain.clone(),
        ),
        args.horizontal_pod_autoscaler_sync_period,
        &state.metrics,
    );
    // With a datastore other servers share, the controllers, the scheduler
    // and the add-on loops run on one server at a time (Lease elections,
    // as upstream); a server's own SQLite needs none.
    let identity =
        shared.then(|| crate::runtime::leader::Election::identity(&super::node::hostname()));
    let elect = |lease: &'static str, client: kube::Client| {
        identity
            .clone()
            .map(|id| crate::runtime::leader::Election::new(client, lease, id))
    };
    let controller_manager_status = controller_manager.leader_status("kube-controller-manager");
    let scheduler_status = controller_manager.leader_status("kube-scheduler");
    start_led(
        &mut components,
        "controller-manager",
        elect(
            "kube-controller-manager",
            crate::apiserver::client::in_process(
                state.clone(),
                User {
                    name: "system:kube-controller-manager".into(),
                    groups: vec!["system:authenticated".into()],
                },
            ),
        )
        .map(|election| election.reporting(controller_manager_status)),
        move |shutdown| controller_manager.clone().run(shutdown),
    );
    // Add-on manifests, applied as an administrator (they may hold anything).
    let manifests = server_dir.join("manifests");
    if let Err(e) = std::fs::create_dir_all(&manifests) {
        tracing::warn!(err = %e, dir = %manifests.display(), "creating the add-on manifests directory");
    }
    let deployer = administrator(&state, "system:kelp-deploy");
    start_led(
        &mut components,
        "deploy",
        elect("kelp-addons", deployer.clone()),
        move |shutdown| {
            crate::controllers::addons::run(deployer.clone(), manifests.clone(), shutdown)
        },
    );
    if enabled("helm-controller") && !args.disable_helm_controller {
        // k3s's helm-controller binds each chart's job to cluster-admin:
        // it holds every right itself.
        let controller = crate::helm::controller::HelmController {
            client: administrator(&state, "system:kelp:helm-controller"),
            default_image: args.helm_job_image.clone(),
            helm_available: !args.disable_agent && args.node.helm_binary().is_some(),
            api_port: args.https_listen_port,
            informers: informers.clone(),
        };
        start_led(
            &mut components,
            "helm-controller",
            elect("kelp-helm-controller", controller.client.clone()),
            move |shutdown| controller.clone().run(shutdown),
        );
    }
    if enabled("scheduler") {
        let client = crate::apiserver::client::in_process(
            state.clone(),
            User {
                name: "system:kube-scheduler".into(),
                groups: vec!["system:authenticated".into()],
            },
        );
        let scheduler = crate::scheduler::DefaultScheduler::new(
            client.clone(),
            informers.clone(),
            &state.metrics,
        );
        let pods = scheduler.pods();
        start_led(
            &mut components,
            "scheduler",
            elect("kube-scheduler", client.clone())
                .map(|election| election.reporting(scheduler_status)),
            move |shutdown| scheduler.clone().run(shutdown),
        );
        crate::apiserver::components::spawn(
            crate::apiserver::components::SCHEDULER_PORT,
            tls.clone(),
            crate::apiserver::components::scheduler_router(
                state.clone(),
                Arc::new(move || crate::scheduler::metrics::resource_metrics(&pods.state())),
            ),
        )
        .await;
    }
    if !args.disable_agent {
        let config = args
            .node
            .agent_config(&args.data_dir, &cluster, node_ip, true)?;
        let as_user = |name: &str, groups: &[&str]| {
            crate::apiserver::client::in_process(
                state.clone(),
                User {
                    name: name.into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                },
            )
        };
        let clients = crate::agent::NodeClients {
            kubelet: as_user(
                &format!("system:node:{node_name}"),
                &["system:nodes", "system:authenticated"],
            ),
            // Sets what a kubelet may not (role labels), as k3s's controller does.
            labeler: Some(as_user("system:kelp-controller", &["system:authenticated"])),
            // The cluster DNS runs with the node, as k3s's CoreDNS with the
            // coredns service account (k3s's name for it in --disable).
            dns: enabled("coredns").then(|| {
                crate::apiserver::client::in_process(
                    state.clone(),
                    User::service_account("kube-system", "coredns"),
                )
            }),
            // k3s's local-path-provisioner runs as this account too.
            local_storage: cluster.local_storage.then(|| {
                crate::apiserver::client::in_process(
                    state.clone(),
                    User::service_account("kube-system", "local-path-provisioner-service-account"),
                )
            }),
            network_policy: cluster.network_policy,
            ingress: cluster.ingress.then(|| crate::agent::IngressIdentity {
                client: as_user(
                    crate::pki::identity::node_components::INGRESS,
                    &["system:authenticated"],
                ),
                secrets: informers.clone(),
            }),
        };
        let node = crate::agent::Node {
            clients,
            // The node's components read from the server's caches: one
            // cache per kind in the process.
            informers: informers.clone(),
            config,
            dns: args.node.dns_config(&cluster),
            tls: tls.clone(),
            metrics: state.metrics.clone(),
        };
        let (registered, pod_cidr) = tokio::sync::oneshot::channel();
        components.start("node", |shutdown| node.run(registered, shutdown));
        // Ready once the node is registered, or known not to come up (then
        // the API serves alone, which systemd should know too).
        let notifier = notifier.clone();
        tokio::spawn(async move {
            match pod_cidr.await {
                Ok(_) => notifier.ready("serving; node registered"),
                Err(_) => notifier.ready("serving the API only: the node agent failed"),
            }
        });
    }
    if args.disable_agent {
        notifier.ready("serving");
    }
    serve::serve(listener, tls, router(state), shutdown_signal(notifier)).await?;
    // The API has stopped serving remote clients; the components (which
    // use the in-process client) get a bounded grace period together.
    let aborted = components.stop(COMPONENTS_GRACE).await;
    if !aborted.is_empty() {
        tracing::warn!(components = ?aborted, "stopped without finishing");
    }
    if let crate::store::Endpoint::Sqlite(db) = &endpoint
        && let Err(e) = crate::store::sqlite::checkpoint_at_stop(db)
    {
        tracing::warn!(err = %e, "checkpointing the datastore at stop");
    }
    tracing::info!("kelp server stopped");
    Ok(())
}

/// Starts component `name`: at once, or with an `election` only while this
/// server holds its Lease (then `run` runs anew for each term).
fn start_led<F, Fut>(
    components: &mut crate::runtime::Components,
    name: &'static str,
    election: Option<crate::runtime::leader::Election>,
    run: F,
) where
    F: Fn(crate::runtime::Shutdown) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    match election {
        None => components.start(name, run),
        Some(election) => components.start(name, move |shutdown| election.run(shutdown, run)),
    }
}

/// The credentials the servers' shared bootstrap data is sealed with: the
/// join token's (`--token`, else `<data-dir>/server/token`, else new ones
/// the first server keeps there).
fn shared_passphrase(args: &ServerArgs, server_dir: &std::path::Path) -> Result<String> {
    let file = server_dir.join("token");
    let text = match super::node::join_token(&args.token, &args.token_file)? {
        Some(text) => text,
        None => match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(_) => {
                let credentials =
                    crate::pki::bootstrap_token::BootstrapToken::generate().to_string();
                write_file_mode(&file, &format!("{credentials}\n"), 0o600)?;
                credentials
            }
        },
    };
    let token = crate::pki::bootstrap_token::JoinToken::parse(&text)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    Ok(token.credentials)
}

/// Installs the credentials another server left in the datastore, if it
/// holds them for this token: whether this server joins a cluster. A
/// datastore holding another token's cluster is refused (two CAs over one
/// set of objects would split the cluster).
async fn install_shared_credentials(
    store: &Arc<dyn crate::store::Store>,
    server_dir: &std::path::Path,
    passphrase: &str,
) -> Result<bool> {
    use crate::pki::shared::{SharedCredentials, store_key};
    match store.get(&store_key(passphrase)).await? {
        Some(kv) => {
            let credentials = SharedCredentials::open(&kv.value, passphrase)
                .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
            if credentials.install(server_dir)? {
                tracing::info!("installed the cluster's shared credentials from the datastore");
            }
            Ok(true)
        }
        None if store.count("/bootstrap/").await? > 0 => bail!(
            "the datastore already holds a cluster with another token: give this server that cluster's token (--token, from the first server's <data-dir>/server/token)"
        ),
        None => Ok(false),
    }
}

/// The first server on a shared datastore leaves its credentials there,
/// sealed, for the next ones.
async fn publish_shared_credentials(
    store: &Arc<dyn crate::store::Store>,
    server_dir: &std::path::Path,
    passphrase: &str,
) -> Result<()> {
    use crate::pki::shared::{SharedCredentials, store_key};
    let sealed = SharedCredentials::collect(server_dir)?.seal(passphrase);
    match store.create(&store_key(passphrase), sealed).await {
        Ok(_) => {
            tracing::info!("left the cluster's shared credentials in the datastore");
            Ok(())
        }
        Err(crate::store::Error::AlreadyExists(_)) => bail!(
            "another server bootstrapped this datastore at the same moment; start this one again to join it"
        ),
        Err(e) => Err(e.into()),
    }
}

/// TLS to a PostgreSQL datastore, if it has a CA: that CA and, if given,
/// kelp's client certificate.
fn postgres_tls(files: &crate::store::TlsFiles) -> Result<Option<Arc<rustls::ClientConfig>>> {
    if files.ca.is_none() {
        return Ok(None);
    }
    let pem = files.read()?;
    let identity: Option<Arc<dyn rustls::client::ResolvesClientCert>> = match &pem.identity {
        Some((cert, key)) => Some(ReloadableCert::from_pem(cert, key)?),
        None => None,
    };
    let ca = pem.ca.unwrap_or_default();
    Ok(Some(crate::pki::tls::client_config(&ca, identity)?))
}

/// Opens the datastore `--datastore-endpoint` names.
async fn open_store(
    endpoint: &crate::store::Endpoint,
    args: &ServerArgs,
    metrics: &Metrics,
) -> Result<Arc<dyn crate::store::Store>> {
    use crate::store::Endpoint;
    let tls = crate::store::TlsFiles {
        ca: args.datastore_cafile.clone(),
        cert: args.datastore_certfile.clone(),
        key: args.datastore_keyfile.clone(),
    };
    Ok(match endpoint {
        Endpoint::Sqlite(db) => {
            let sqlite =
                SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?;
            sqlite.register_metrics(metrics);
            Arc::new(sqlite)
        }
        Endpoint::Postgres(url) => Arc::new(
            crate::store::postgres::PostgresStore::connect(url, postgres_tls(&tls)?)
                .await
                .context("opening the PostgreSQL datastore")?,
        ),
        Endpoint::Etcd(members) => {
            let etcd = crate::store::etcd::EtcdStore::connect(members, &tls)
                .await
                .context("opening the etcd datastore")?;
            // Keys and values as kube-apiserver keeps them, for etcdctl and
            // upstream's tools.
            Arc::new(crate::apiserver::etcd_layout::EtcdLayout::new(
                Arc::new(etcd),
                &crate::api::registry::resources::Registry::new(),
            ))
        }
    })
}

/// An in-process client acting as `name` in `system:masters`, for the
/// server's own privileged components (add-on manifests, the helm
/// controller, the `kubernetes` Service's endpoints).
fn administrator(state: &Arc<ApiState>, name: &str) -> kube::Client {
    crate::apiserver::client::in_process(
        state.clone(),
        User {
            name: name.into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        },
    )
}

/// What `--disable` takes (k3s's names).
const DISABLEABLE: &[&str] = &[
    "scheduler",
    "coredns",
    "local-storage",
    "network-policy",
    "ingress",
    "helm-controller",
];

/// How long the components have, together, to stop at shutdown (the node
/// waits up to 10 s for containerd to exit).
pub(crate) const COMPONENTS_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// Resolves on SIGTERM or SIGINT, telling systemd the server is stopping.
pub(crate) async fn shutdown_signal(notifier: super::notify::Notifier) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: signal received");
    notifier.stopping();
}

/// Serves every stored CRD's resources before accepting requests.
async fn load_custom_resources(state: &ApiState) -> Result<()> {
    let Some(crds) =
        state
            .registry
            .lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return Ok(());
    };
    let page = state.store.list(&crds.key_prefix(None), None, 0).await?;
    for kv in page.items {
        if let Ok(crd) = serde_json::from_slice(&kv.value) {
            crate::api::registry::crd::register(&state.registry, &crd);
        }
    }
    Ok(())
}

/// Creates the system namespaces and the `kubernetes` Service if missing, through the API's own create path.
async fn bootstrap(
    state: &ApiState,
    service_cidr: crate::apiserver::services::Cidr,
    port: u16,
) -> Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create_if_missing(
            state,
            "",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_cidr.nth(1).to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    create_if_missing(state, "", "services", Some("default"), service).await
}

/// Re-issues leaf certificates when they come due (see
/// `ClusterPki::renew_at`), swaps them into the live TLS configurations and
/// rewrites the admin kubeconfig; connections stay up.
async fn renew_certificates(
    mut pki: ClusterPki,
    names: ServingNames,
    serving: Arc<ReloadableCert>,
    admin: Arc<ReloadableCert>,
    (kubeconfig, server_url, mode): (PathBuf, String, u32),
) {
    loop {
        let wait = pki
            .renew_at()
            .map(|due| due - time::OffsetDateTime::now_utc())
            .and_then(|left| std::time::Duration::try_from(left).ok())
            .unwrap_or_default()
            // Look again at least daily (a clock that jumped, files edited by hand).
            .clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(24 * 3600),
            );
        tokio::time::sleep(wait).await;
        let renewed = match ClusterPki::load_or_create(&pki.dir, &names) {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::error!(err = %format!("{e:#}"), "renewing certificates; retrying in a minute");
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                continue;
            }
        };
        if renewed.serving_cert != pki.serving_cert
            && let Err(e) = serving.replace(&renewed.serving_cert, &renewed.serving_key)
        {
            tracing::error!(err = %format!("{e:#}"), "loading the renewed serving certificate");
        }
        if renewed.admin_cert != pki.admin_cert {
            if let Err(e) = admin.replace(&renewed.admin_cert, &renewed.admin_key) {
                tracing::error!(err = %format!("{e:#}"), "loading the renewed admin certificate");
            }
            if let Err(e) =
                write_file_mode(&kubeconfig, &renewed.admin_kubeconfig(&server_url), mode)
            {
                tracing::error!(err = %format!("{e:#}"), "rewriting the admin kubeconfig");
            }
        }
        if renewed.serving_cert != pki.serving_cert || renewed.admin_cert != pki.admin_cert {
            tracing::info!("certificates renewed while running");
        }
        pki = renewed;
    }
}

async fn create_if_missing(
    state: &ApiState,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    mut obj: serde_json::Value,
) -> Result<()> {
    let req = handlers::system_request(state, group, resource, namespace, None)
        .context("bootstrap resource")?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if state
        .store
        .get(&req.rt.key(namespace, &name))
        .await?
        .is_some()
    {
        return Ok(());
    }
    handlers::create::create_object(state, &req, &mut obj)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping {resource}/{name}: {e}"))?;
    Ok(())
}

/// `kelp kubectl ARGS`: kubectl with the admin kubeconfig unless KUBECONFIG is set.
pub fn kubectl(args: &[String]) -> Result<()> {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.args(args);
    if std::env::var_os("KUBECONFIG").is_none() {
        cmd.env("KUBECONFIG", super::remote::admin_kubeconfig());
    }
    let status = cmd.status().context("running kubectl")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// API Priority and Fairness over the server's seats, or with
/// `--enable-priority-and-fairness=false` the max-in-flight limits.
async fn flow_control(
    args: &ServerArgs,
    store: &Arc<dyn crate::store::Store>,
    metrics: &crate::telemetry::Metrics,
) -> Result<crate::apiserver::flowcontrol::FlowControl> {
    use crate::apiserver::flowcontrol::{FlowControl, InFlightLimits, PriorityAndFairness};
    if !args.enable_priority_and_fairness {
        return Ok(FlowControl::MaxInFlight(InFlightLimits::new(
            args.max_requests_inflight,
            args.max_mutating_requests_inflight,
        )));
    }
    let seats = args.max_requests_inflight + args.max_mutating_requests_inflight;
    anyhow::ensure!(
        seats > 0,
        "--max-requests-inflight plus --max-mutating-requests-inflight must be positive with API Priority and Fairness on"
    );
    let apf = PriorityAndFairness::start(store.clone(), seats as u32, metrics).await?;
    Ok(FlowControl::PriorityAndFairness(apf))
}
