//! Facts about the host's own network: the address kelp advertises when
//! `--node-ip` is not given.

use std::net::Ipv4Addr;

/// The IPv4 address of the interface holding the default route (the "first
/// host IP" of k3s), read from /proc and the interface list; sends nothing.
pub fn default_ipv4() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_string())
    })?;
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        if a.interface_name != interface {
            return None;
        }
        a.address?.as_sockaddr_in().map(|s| s.ip())
    })
}
