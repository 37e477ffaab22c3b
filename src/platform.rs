//! Facts about the machine kelp runs on, as Kubernetes names them: a leaf
//! every component may use (the node's labels and status, images' platform
//! matching, the API server's `/version`).

/// The operating system, as `kubernetes.io/os` names it.
pub const OS: &str = "linux";

/// The CPU architecture as Kubernetes names it (`kubernetes.io/arch`).
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}
