//! Names outside the cluster go to the node's upstream resolvers, read from
//! its resolv.conf as CoreDNS's `forward . /etc/resolv.conf` does: only the
//! nameservers count (no search list), over UDP with TCP for truncated
//! answers. kelp's DNS runs in the host's network namespace, so loopback
//! stubs such as systemd-resolved's 127.0.0.53 are reachable and kept;
//! the cluster DNS's own addresses are dropped so a host pointed at
//! kelp cannot make queries loop.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverOpts};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::ZoneHandler;

use crate::network::resolv::ResolvConf;

/// How long one upstream attempt may take, and how many are made
/// (CoreDNS's forward plugin gives up on an upstream after about 2 s).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 2;
/// CoreDNS's forward plugin uses at most 15 upstreams.
const MAX_UPSTREAMS: usize = 15;

/// The upstream nameservers in `conf`, less `own` addresses.
pub fn upstreams(conf: &ResolvConf, own: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in &conf.nameservers {
        if !own.contains(ip) && !ip.is_unspecified() && !out.contains(ip) {
            out.push(*ip);
        }
    }
    out.truncate(MAX_UPSTREAMS);
    out
}

/// A zone handler forwarding every name to the upstreams of `resolv_conf`;
/// None (with a warning) when it names none, so outside names are refused.
pub fn handler(resolv_conf: &Path, own: &[IpAddr]) -> Option<Arc<dyn ZoneHandler>> {
    let conf = match ResolvConf::read(resolv_conf) {
        Ok(conf) => conf,
        Err(e) => {
            tracing::warn!(path = %resolv_conf.display(), err = %e, "reading resolv.conf: names outside the cluster will not resolve");
            return None;
        }
    };
    let servers = upstreams(&conf, own);
    if servers.is_empty() {
        tracing::warn!(path = %resolv_conf.display(), "no upstream nameservers: names outside the cluster will not resolve");
        return None;
    }
    tracing::info!(upstreams = ?servers, path = %resolv_conf.display(), "cluster DNS forwards other names");
    let mut options = ResolverOpts::default();
    options.timeout = UPSTREAM_TIMEOUT;
    options.attempts = ATTEMPTS;
    // Forward the question as asked: no search list, no hosts file.
    options.ndots = 0;
    options.preserve_intermediates = true;
    let config = ForwardConfig {
        name_servers: servers
            .into_iter()
            .map(NameServerConfig::udp_and_tcp)
            .collect(),
        options: Some(options),
    };
    match ForwardZoneHandler::builder_tokio(config).build() {
        Ok(forwarder) => Some(Arc::new(forwarder)),
        Err(e) => {
            tracing::warn!(err = %e, "configuring the DNS forwarder");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_leave_out_our_own_addresses() {
        let conf = ResolvConf::parse(
            "nameserver 10.42.0.1\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver 192.0.2.1\nnameserver 10.43.0.10\n",
        );
        let own = ["10.42.0.1".parse().unwrap(), "10.43.0.10".parse().unwrap()];
        assert_eq!(
            upstreams(&conf, &own),
            [
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "192.0.2.1".parse().unwrap()
            ]
        );
    }
}
