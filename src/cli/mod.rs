//! Command-line interface: clap definitions, and the config-file merge
//! (flag > `KELP_<FLAG>` environment > `/etc/kelp/config.yaml` and its
//! `config.yaml.d/` drop-ins, see [`config`]).

pub mod agent;
pub mod certificate;
pub mod config;
pub mod images;
pub mod node;
pub mod notify;
pub mod remote;
pub mod secrets_encrypt;
pub mod server;
pub mod store;
pub mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kelp: a whole Kubernetes cluster in one binary.
#[derive(Debug, Parser)]
#[command(name = "kelp", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane and the local node.
    Server(Box<ServerArgs>),
    /// Manage the node's images.
    Images {
        /// What to do.
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Run a node that joins a server.
    Agent(Box<AgentArgs>),
    /// Manage join tokens (bootstrap tokens).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run kubectl against this cluster's admin kubeconfig.
    Kubectl {
        /// Arguments passed to kubectl.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print version information.
    Version,
    /// Secrets encryption at rest on the running server.
    SecretsEncrypt {
        /// What to do.
        #[command(subcommand)]
        command: SecretsEncryptCommand,
    },
    /// Manage kelp's certificates.
    Certificate {
        /// What to do.
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// The embedded datastore (SQLite).
    Store {
        /// What to do.
        #[command(subcommand)]
        command: StoreCommand,
    },
}

/// `kelp store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Snapshots of the datastore (k3s's etcd-snapshot for kelp's SQLite).
    Snapshot {
        /// What to do.
        #[command(subcommand)]
        command: SnapshotCommand,
        /// Where the snapshots are.
        #[command(flatten)]
        place: SnapshotPlace,
    },
}

/// Where the datastore and its snapshots are.
#[derive(Debug, Clone, Args)]
pub struct SnapshotPlace {
    /// State directory.
    #[arg(
        long,
        env = "KELP_DATA_DIR",
        default_value = "/var/lib/kelp",
        global = true
    )]
    pub data_dir: PathBuf,
    /// The snapshots' directory (unset: `<data-dir>/server/db/snapshots`).
    #[arg(long, env = "KELP_ETCD_SNAPSHOT_DIR", global = true)]
    pub etcd_snapshot_dir: Option<PathBuf>,
}

/// `kelp store snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot now (also while kelp runs).
    Save {
        /// The name's prefix.
        #[arg(long, default_value = "on-demand")]
        name: String,
    },
    /// List the snapshots, newest first.
    #[command(alias = "ls")]
    List,
    /// Replace the datastore with a snapshot (kelp must be stopped); the
    /// old database is kept in `db/state-old-<time>/`.
    Restore {
        /// The snapshot: a name from `list`, or a path.
        snapshot: String,
    },
    /// Remove snapshots of a name beyond the newest N.
    Prune {
        /// The name's prefix.
        #[arg(long, default_value = "etcd-snapshot")]
        name: String,
        /// How many to keep.
        #[arg(long = "snapshot-retention", default_value_t = 5)]
        retention: usize,
    },
}

/// `kelp secrets-encrypt` subcommands (k3s's, through the running server).
#[derive(Debug, Subcommand)]
pub enum SecretsEncryptCommand {
    /// Whether secrets are encrypted, the active key, values per key.
    Status,
    /// A new key, every secret re-encrypted with it, the old key removed.
    RotateKeys,
}

/// Flags of `kelp agent` (k3s's).
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Config file.
    #[arg(long, env = "KELP_CONFIG", default_value = "/etc/kelp/config.yaml")]
    pub config: PathBuf,
    /// State directory.
    #[arg(long, env = "KELP_DATA_DIR", default_value = "/var/lib/kelp")]
    pub data_dir: PathBuf,
    /// The server to join, https://HOST:PORT.
    #[arg(long, env = "KELP_URL")]
    pub server: String,
    /// The join token (`K10<CA hash>::<credentials>` pins the server's CA).
    #[arg(long, env = "KELP_TOKEN")]
    pub token: Option<String>,
    /// The join token from a file.
    #[arg(long, env = "KELP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Loopback port of the agent's load balancer in front of the servers.
    #[arg(long, env = "KELP_LB_SERVER_PORT", default_value_t = 6444)]
    pub lb_server_port: u16,
    /// The node's flags.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Logs, traces and metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// `kelp token` subcommands (kubeadm's bootstrap tokens, printed in k3s's
/// secure format).
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token (random unless given) and print it.
    Create {
        /// The token, `<6 chars>.<16 chars>` of [a-z0-9].
        token: Option<String>,
        /// Lifetime (`24h`, `30m`; `0` never expires).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Shown by `kelp token list`.
        #[arg(long, default_value = "")]
        description: String,
        /// Usages: authentication, signing.
        #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
        usages: Vec<String>,
        /// Extra groups (system:bootstrappers:…).
        #[arg(long, value_delimiter = ',', default_value = crate::pki::bootstrap_token::DEFAULT_NODE_GROUP)]
        groups: Vec<String>,
    },
    /// List tokens.
    List,
    /// Delete tokens by id or whole token.
    Delete {
        /// Token ids or tokens.
        #[arg(required = true)]
        tokens: Vec<String>,
    },
    /// Print a random token without creating it.
    Generate,
}

/// `kelp certificate` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Set leaf certificates aside (backed up) so that kelp issues new ones
    /// when it next starts (k3s's `certificate rotate`).
    Rotate {
        /// Only these (repeatable): admin, api-server.
        #[arg(long = "service", short = 's', value_delimiter = ',')]
        services: Vec<String>,
        /// State directory.
        #[arg(long, env = "KELP_DATA_DIR", default_value = "/var/lib/kelp")]
        data_dir: PathBuf,
    },
    /// Replace the cluster CA with a new one, cross-signed by the current
    /// CA so that whoever trusts it keeps working (k3s's `certificate
    /// rotate-ca`); leaf certificates are issued under the new CA when kelp
    /// next starts.
    RotateCa {
        /// State directory.
        #[arg(long, env = "KELP_DATA_DIR", default_value = "/var/lib/kelp")]
        data_dir: PathBuf,
    },
}

/// `kelp images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Load docker-archive or OCI-layout tarballs into the node's containerd.
    Import {
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// State directory (scratch space for unpacking).
        #[arg(long, env = "KELP_DATA_DIR", default_value = "/var/lib/kelp")]
        data_dir: PathBuf,
        /// containerd socket (default: the one kelp supervises).
        #[arg(long, env = "KELP_CONTAINER_RUNTIME_ENDPOINT")]
        container_runtime_endpoint: Option<PathBuf>,
    },
}

/// Flags of `kelp server` (names as k3s's where k3s has the same knob).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Config file.
    #[arg(long, env = "KELP_CONFIG", default_value = "/etc/kelp/config.yaml")]
    pub config: PathBuf,
    /// State directory.
    #[arg(long, env = "KELP_DATA_DIR", default_value = "/var/lib/kelp")]
    pub data_dir: PathBuf,
    /// Where to write the admin kubeconfig.
    #[arg(
        long,
        env = "KELP_WRITE_KUBECONFIG",
        default_value = "/etc/kelp/kelp.yaml"
    )]
    pub write_kubeconfig: PathBuf,
    /// Mode of the admin kubeconfig (octal).
    #[arg(long, env = "KELP_WRITE_KUBECONFIG_MODE", default_value = "0600")]
    pub write_kubeconfig_mode: String,
    /// HTTPS port of the API server.
    #[arg(long, env = "KELP_HTTPS_LISTEN_PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address to listen on.
    #[arg(long, env = "KELP_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Address advertised to clients (default: first host IP).
    #[arg(long, env = "KELP_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// Extra names and IPs for the serving certificate.
    #[arg(long, env = "KELP_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// The local node's flags.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Join tokens: the server's own (k3s's --token; any passphrase, a
    /// bootstrap token `<id>.<secret>`, or a `K10…::` token of this
    /// cluster; default: generated at first start and kept in
    /// <data-dir>/server/token).
    #[arg(long, env = "KELP_TOKEN")]
    pub token: Option<String>,
    /// The server's token from a file.
    #[arg(long, env = "KELP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A second token that only joins agents (k3s's --agent-token; kept in
    /// <data-dir>/server/agent-token).
    #[arg(long, env = "KELP_AGENT_TOKEN")]
    pub agent_token: Option<String>,
    /// Join another server for high availability (not supported yet).
    #[arg(long, env = "KELP_URL")]
    pub server: Option<String>,
    /// Pod network.
    #[arg(long, env = "KELP_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service network.
    #[arg(long, env = "KELP_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Cluster DNS service IP.
    #[arg(long, env = "KELP_CLUSTER_DNS", default_value = "10.43.0.10")]
    pub cluster_dns: String,
    /// Cluster domain.
    #[arg(long, env = "KELP_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// NodePort range.
    #[arg(
        long,
        env = "KELP_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    pub service_node_port_range: String,
    /// Datastore: sqlite://PATH (default under the data dir),
    /// postgres://USER:PASS@HOST:PORT/DB, or etcd members
    /// http(s)://HOST:2379[,...].
    #[arg(long, env = "KELP_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,
    /// CA of the datastore's serving certificate (etcd over https;
    /// PostgreSQL, then over TLS unless sslmode=disable).
    #[arg(long, env = "KELP_DATASTORE_CAFILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for the datastore (etcd over https, PostgreSQL
    /// over TLS).
    #[arg(long, env = "KELP_DATASTORE_CERTFILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Key of --datastore-certfile.
    #[arg(long, env = "KELP_DATASTORE_KEYFILE")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Do not run the local node.
    #[arg(long, env = "KELP_DISABLE_AGENT")]
    pub disable_agent: bool,
    /// Encrypt secrets at rest (a generated AES-CBC key in
    /// <data-dir>/server/cred/encryption-config.json, as k3s).
    #[arg(long, env = "KELP_SECRETS_ENCRYPTION")]
    pub secrets_encryption: bool,
    /// Admission plugins' configuration (kube-apiserver's
    /// AdmissionConfiguration file): PodSecurity defaults and exemptions.
    #[arg(long, env = "KELP_ADMISSION_CONTROL_CONFIG_FILE")]
    pub admission_control_config_file: Option<PathBuf>,
    /// Audit policy (upstream's audit.k8s.io/v1 Policy); with
    /// --audit-log-path, requests are audited as it says.
    #[arg(long, env = "KELP_AUDIT_POLICY_FILE")]
    pub audit_policy_file: Option<PathBuf>,
    /// Audit log file (JSON lines; `-` for standard output).
    #[arg(long, env = "KELP_AUDIT_LOG_PATH")]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log at this many megabytes (0: 100).
    #[arg(long, env = "KELP_AUDIT_LOG_MAXSIZE", default_value_t = 0)]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, env = "KELP_AUDIT_LOG_MAXBACKUP", default_value_t = 0)]
    pub audit_log_maxbackup: usize,
    /// Days to keep rotated audit logs (0: no limit).
    #[arg(long, env = "KELP_AUDIT_LOG_MAXAGE", default_value_t = 0)]
    pub audit_log_maxage: u64,
    /// Authorizers, in order (upstream's flag): Node, RBAC, AlwaysAllow.
    #[arg(
        long,
        env = "KELP_AUTHORIZATION_MODE",
        value_delimiter = ',',
        default_value = "Node,RBAC"
    )]
    pub authorization_mode: Vec<crate::apiserver::authz::Mode>,
    /// Components not to run (repeatable): scheduler, coredns, local-storage,
    /// network-policy, ingress, helm-controller.
    #[arg(long, env = "KELP_DISABLE", value_delimiter = ',')]
    pub disable: Vec<String>,
    /// When the server snapshots its datastore (cron, local time; k3s's
    /// flag and default).
    #[arg(
        long,
        env = "KELP_ETCD_SNAPSHOT_SCHEDULE_CRON",
        default_value = "0 */12 * * *"
    )]
    pub etcd_snapshot_schedule_cron: String,
    /// Scheduled snapshots kept.
    #[arg(long, env = "KELP_ETCD_SNAPSHOT_RETENTION", default_value_t = 5)]
    pub etcd_snapshot_retention: usize,
    /// The snapshots' directory (unset: `<data-dir>/server/db/snapshots`).
    #[arg(long, env = "KELP_ETCD_SNAPSHOT_DIR")]
    pub etcd_snapshot_dir: Option<PathBuf>,
    /// No scheduled snapshots.
    #[arg(long, env = "KELP_ETCD_DISABLE_SNAPSHOTS")]
    pub etcd_disable_snapshots: bool,
    /// k3s's spelling of `--disable helm-controller`.
    #[arg(long, env = "KELP_DISABLE_HELM_CONTROLLER")]
    pub disable_helm_controller: bool,
    /// The image of HelmChart jobs that name none (k3s's flag; default:
    /// kelp's own, built on each node from kelp and its `helm`).
    #[arg(long, env = "KELP_HELM_JOB_IMAGE", default_value = crate::helm::JOB_IMAGE)]
    pub helm_job_image: String,
    /// Logs, traces and metrics.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// API Priority and Fairness: FlowSchemas classify requests into
    /// priority levels that queue them fairly; false: the in-flight limits.
    #[arg(
        long,
        env = "KELP_ENABLE_PRIORITY_AND_FAIRNESS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enable_priority_and_fairness: bool,
    /// With API Priority and Fairness off, read-only requests (get, list) in
    /// flight at most; more get 429 (0: no limit). With it on, this plus the
    /// mutating limit are the seats the priority levels share.
    #[arg(long, env = "KELP_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// With API Priority and Fairness off, mutating requests in flight at
    /// most; more get 429 (0: no limit). See `--max-requests-inflight`.
    #[arg(
        long,
        env = "KELP_MAX_MUTATING_REQUESTS_INFLIGHT",
        default_value_t = 200
    )]
    pub max_mutating_requests_inflight: usize,
    /// How often each HorizontalPodAutoscaler is synced (kube-controller-manager's flag).
    #[arg(
        long,
        env = "KELP_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How often old revisions are compacted (kube-apiserver's flag): each
    /// time, history older than the previous compaction's revision goes
    /// (and never more than 10,000 revisions are kept; a pass with fewer
    /// than 1,000 to forget waits, at most 11 in a row); watches and lists
    /// from before get 410 Gone. 0 turns compaction off.
    #[arg(
        long,
        env = "KELP_ETCD_COMPACTION_INTERVAL",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub etcd_compaction_interval: std::time::Duration,
}

/// Flags of the node side, shared by `kelp server` (its local node) and `kelp agent`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Node name.
    #[arg(long, env = "KELP_NODE_NAME")]
    pub node_name: Option<String>,
    /// Node IP.
    #[arg(long, env = "KELP_NODE_IP")]
    pub node_ip: Option<String>,
    /// Labels for the Node, key=value (repeatable).
    #[arg(long, env = "KELP_NODE_LABEL", value_delimiter = ',')]
    pub node_label: Vec<String>,
    /// Taints for the Node, key=value:Effect (repeatable).
    #[arg(long, env = "KELP_NODE_TAINT", value_delimiter = ',')]
    pub node_taint: Vec<String>,
    /// CRI socket of a runtime kelp does not manage (unset: kelp runs containerd).
    #[arg(long, env = "KELP_CONTAINER_RUNTIME_ENDPOINT")]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Rotate a container's log once it is larger than this.
    #[arg(long, env = "KELP_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi")]
    pub container_log_max_size: String,
    /// Registry mirrors and credentials (k3s's registries.yaml format).
    #[arg(
        long,
        env = "KELP_PRIVATE_REGISTRY",
        default_value = "/etc/kelp/registries.yaml"
    )]
    pub private_registry: PathBuf,
    /// Log files kept per container, the live one included.
    #[arg(long, env = "KELP_CONTAINER_LOG_MAX_FILES", default_value_t = 5)]
    pub container_log_max_files: usize,
    /// The node's resolv.conf: upstream servers for pods with dnsPolicy
    /// Default and for names the cluster DNS forwards (k3s's flag; unset:
    /// /etc/resolv.conf, or systemd-resolved's list when that names only
    /// loopback servers).
    #[arg(long, env = "KELP_RESOLV_CONF")]
    pub resolv_conf: Option<PathBuf>,
    /// How pods reach pods on other nodes: host-gw (routes; nodes on one
    /// L2 segment), vxlan (a tunnel; any routed network) or none (a CNI of
    /// your own); flannel's --flannel-backend.
    #[arg(long, env = "KELP_POD_NETWORK_BACKEND", default_value = "vxlan")]
    pub pod_network_backend: crate::network::routes::Backend,
    /// The cgroup pods go under, as `<root>/kubepods/pod<uid>` (kubelet's
    /// --cgroup-root; give each kelp node on one machine its own).
    #[arg(long, env = "KELP_CGROUP_ROOT", default_value = "/")]
    pub cgroup_root: String,
    /// Where the local-path provisioner makes volumes' directories
    /// (k3s's flag; unset: `<data-dir>/storage`).
    #[arg(long, env = "KELP_DEFAULT_LOCAL_STORAGE_PATH")]
    pub default_local_storage_path: Option<PathBuf>,
    /// The ingress proxy's HTTP port on every address of the node.
    #[arg(long, env = "KELP_INGRESS_HTTP_PORT", default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The ingress proxy's HTTPS port on every address of the node.
    #[arg(long, env = "KELP_INGRESS_HTTPS_PORT", default_value_t = 443)]
    pub ingress_https_port: u16,
    /// The `helm` that goes into kelp's HelmChart job image on this node
    /// (unset: `helm` in PATH; none found: no such image here).
    #[arg(long, env = "KELP_HELM_BINARY")]
    pub helm_binary: Option<PathBuf>,
}

/// Logging, tracing and metrics flags (klog's, component-base's), shared by
/// every long-running command.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format: text (klog) or json.
    #[arg(long, env = "KELP_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log verbosity, as klog's -v.
    #[arg(short = 'v', long = "v", env = "KELP_V", default_value_t = 0)]
    pub verbosity: u8,
    /// Per-file verbosity, as klog's: pattern=N,… (a pattern matches a
    /// source file's name without .rs, e.g. `worker=4`).
    #[arg(long, env = "KELP_VMODULE", default_value = "")]
    pub vmodule: String,
    /// Write logs to this file instead of stderr.
    #[arg(long, env = "KELP_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Megabytes the log file may reach before it is rotated to
    /// `<file>.1` (0: no limit), as klog's flag.
    #[arg(long, env = "KELP_LOG_FILE_MAX_SIZE", default_value_t = 1800)]
    pub log_file_max_size: u64,
    /// Upstream's TracingConfiguration file: export spans over OTLP/gRPC
    /// (`endpoint`, default localhost:4317; `samplingRatePerMillion`, default 0).
    #[arg(long, env = "KELP_TRACING_CONFIG_FILE")]
    pub tracing_config_file: Option<PathBuf>,
    /// The previous version for which you want to show hidden metrics. Only
    /// the previous minor version is meaningful, other values will not be
    /// allowed. The format is <major>.<minor>, e.g.: '1.32'.
    #[arg(long, env = "KELP_SHOW_HIDDEN_METRICS_FOR_VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Metrics not to expose, by fully qualified name (repeatable,
    /// comma-separated). Disabling wins over showing hidden metrics.
    #[arg(long, env = "KELP_DISABLED_METRICS", value_delimiter = ',')]
    pub disabled_metrics: Vec<String>,
    /// A label's allowed values, others exposed as 'unexpected':
    /// <metric>,<label>='<value>,<value>' (repeatable).
    #[arg(long, env = "KELP_ALLOW_METRIC_LABELS")]
    pub allow_metric_labels: Vec<String>,
    /// A YAML map of '<metric>,<label>' to '<value>,<value>'; ignored when
    /// --allow-metric-labels is given.
    #[arg(long, env = "KELP_ALLOW_METRIC_LABELS_MANIFEST")]
    pub allow_metric_labels_manifest: Option<PathBuf>,
}

/// A duration as Kubernetes flags write them (`15s`, `1m30s`, `500ms`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    std::time::Duration::try_from(parsed)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid duration {text:?}: must be positive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_kubernetes_flags_write_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
