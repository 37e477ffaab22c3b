//! IPv4 CIDR arithmetic shared by service IP allocation and pod IPAM.

use std::net::Ipv4Addr;

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub base: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let base: Ipv4Addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if prefix > 30 {
            return Err(format!("{s:?}: prefix must be /30 or shorter"));
        }
        let mask = u32::MAX << (32 - prefix as u32);
        Ok(Self {
            base: Ipv4Addr::from(u32::from(base) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Cidr {
    /// The n-th address (n=1 is the first usable).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }

    /// Number of usable addresses.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.prefix as u32)) - 2
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix as u32);
        u32::from(ip) & mask == u32::from(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_math() {
        let cidr: Cidr = "10.43.0.0/16".parse().expect("cidr");
        assert_eq!(cidr.nth(1), Ipv4Addr::new(10, 43, 0, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 43, 200, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 42, 0, 1)));
        assert_eq!(cidr.size(), 65534);
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }
}
