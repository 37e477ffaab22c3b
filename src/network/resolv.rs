//! The node's resolver configuration (`resolv.conf`): which file describes
//! the node's upstream DNS (k3s's choice), and its nameservers, search list
//! and options as the kubelet reads them. Used by the kubelet for pods with
//! `dnsPolicy: Default` and by the cluster DNS to forward outside names.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The conventional file.
pub const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstream servers (its stub at
/// 127.0.0.53 is what /etc/resolv.conf names on such hosts).
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The parsed parts of a resolv.conf that DNS configuration uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` addresses, in file order (unparsable ones left out).
    pub nameservers: Vec<IpAddr>,
    /// The last `search` line's domains, without trailing dots (`.` dropped).
    pub searches: Vec<String>,
    /// `options` entries (`ndots:2`, `rotate`), a later one replacing an
    /// earlier one of the same name.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text as the kubelet does: `#`/`;` comments, the
    /// last `search` wins, `domain` ignored.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    // A scoped IPv6 address (fe80::1%eth0) names its zone after '%'.
                    if let Some(ip) = fields
                        .next()
                        .and_then(|f| f.split('%').next())
                        .and_then(|f| f.parse().ok())
                    {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") => {
                    conf.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for option in fields {
                        merge_option(&mut conf.options, option);
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Whether some nameserver is reachable from a pod's network namespace
    /// (not a loopback stub such as systemd-resolved's 127.0.0.53).
    pub fn has_non_loopback_nameserver(&self) -> bool {
        self.nameservers.iter().any(|ip| !ip.is_loopback())
    }
}

/// Adds `option` to `options`, replacing an entry of the same name.
pub fn merge_option(options: &mut Vec<String>, option: &str) {
    let name = option.split(':').next().unwrap_or_default();
    options.retain(|o| o.split(':').next() != Some(name));
    options.push(option.to_string());
}

/// The resolv.conf describing the node's upstream DNS when `--resolv-conf`
/// is not given, chosen as k3s chooses it: /etc/resolv.conf unless it names
/// only loopback servers (a local stub pods cannot reach), then
/// systemd-resolved's upstream list if that one is usable.
pub fn host_resolv_conf() -> PathBuf {
    let usable = |path: &str| {
        ResolvConf::read(Path::new(path)).is_ok_and(|c| c.has_non_loopback_nameserver())
    };
    if !usable(ETC_RESOLV_CONF) && usable(SYSTEMD_RESOLV_CONF) {
        return PathBuf::from(SYSTEMD_RESOLV_CONF);
    }
    PathBuf::from(ETC_RESOLV_CONF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_kubelet() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n\
             domain example.org\nsearch old.example\nsearch a.example. . b.example ; note\n\
             options ndots:2 rotate\noptions ndots:3\n",
        );
        assert_eq!(
            conf.nameservers,
            [
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(conf.searches, ["a.example", "b.example"]);
        assert_eq!(conf.options, ["rotate", "ndots:3"]);
        assert!(conf.has_non_loopback_nameserver());
        assert!(!ResolvConf::parse("nameserver 127.0.0.53\n").has_non_loopback_nameserver());
    }
}
