//! Pod IP address management for one node's pod CIDR, kept on disk like CNI's
//! host-local: one file per allocated address (named by the address, holding
//! the container ID and interface), created with O_EXCL under a lock, so two
//! plugin processes never hand out the same address and a restart forgets nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::cidr::Cidr;

/// Errors of address management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every address of the range is taken.
    #[error("no free address left in {0}")]
    Exhausted(String),
    /// The state directory could not be read or written.
    #[error("ipam state {path}: {source}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result alias of the module.
pub type Result<T> = std::result::Result<T, Error>;

/// Allocates addresses of one subnet; the first address is the gateway.
pub struct Ipam {
    dir: PathBuf,
    subnet: Cidr,
}

impl Ipam {
    /// Address management for `subnet`, with state in `dir` (created if missing).
    pub fn open(dir: &Path, subnet: Cidr) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::State {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            subnet,
        })
    }

    /// The bridge's address: the subnet's first.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.nth(1)
    }

    /// The address of `container`'s `ifname`, allocating one if it has none.
    /// Allocation continues after the last one handed out, so a released
    /// address is not reused at once.
    pub fn allocate(&self, container: &str, ifname: &str) -> Result<Ipv4Addr> {
        let _lock = self.lock()?;
        if let Some(ip) = self.find(container, ifname)? {
            return Ok(ip);
        }
        let size = self.subnet.size();
        let last = self.last_reserved().unwrap_or(1);
        // Allocatable offsets are 2..=size (.1 is the gateway); start after `last`.
        let candidates = i64::from(size) - 1;
        for step in 1..=candidates {
            let offset = ((i64::from(last) - 2 + step).rem_euclid(candidates) + 2) as u32;
            let ip = self.subnet.nth(offset);
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(format!("{container}\n{ifname}\n").as_bytes())
                        .and_then(|_| file.sync_all())
                        .map_err(|source| Error::State {
                            path: path.clone(),
                            source,
                        })?;
                    let marker = self.dir.join("last_reserved_ip");
                    std::fs::write(&marker, ip.to_string()).map_err(|source| Error::State {
                        path: marker,
                        source,
                    })?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(Error::State { path, source }),
            }
        }
        Err(Error::Exhausted(format!(
            "{}/{}",
            self.subnet.base, self.subnet.prefix
        )))
    }

    /// Frees the address of `container`'s `ifname`; returns it, if it had one.
    pub fn release(&self, container: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        let _lock = self.lock()?;
        let Some(ip) = self.find(container, ifname)? else {
            return Ok(None);
        };
        let path = self.dir.join(ip.to_string());
        std::fs::remove_file(&path).map_err(|source| Error::State { path, source })?;
        Ok(Some(ip))
    }

    /// Every allocated address with its owner (`container`, `ifname`).
    pub fn allocated(&self) -> Result<Vec<(Ipv4Addr, String, String)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| Error::State {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let mut lines = text.lines();
            let container = lines.next().unwrap_or("").to_string();
            let ifname = lines.next().unwrap_or("").to_string();
            out.push((ip, container, ifname));
        }
        out.sort();
        Ok(out)
    }

    fn find(&self, container: &str, ifname: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .allocated()?
            .into_iter()
            .find(|(_, c, i)| c == container && i == ifname)
            .map(|(ip, _, _)| ip))
    }

    fn last_reserved(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("last_reserved_ip")).ok()?;
        let ip: Ipv4Addr = text.trim().parse().ok()?;
        self.subnet
            .contains(ip)
            .then(|| u32::from(ip) - u32::from(self.subnet.base))
    }

    /// The state directory's exclusive lock (also serialises node-wide rule changes).
    pub fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::State {
                path: path.clone(),
                source,
            })?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| Error::State {
            path,
            source: errno.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path) -> Ipam {
        Ipam::open(dir, "10.42.3.0/24".parse().expect("cidr")).expect("open")
    }

    #[test]
    fn allocates_distinct_addresses_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tmp");
        let ipam = ipam(dir.path());
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let a = ipam.allocate("c1", "eth0").expect("a");
        let b = ipam.allocate("c2", "eth0").expect("b");
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 42, 3, 2), Ipv4Addr::new(10, 42, 3, 3))
        );
        assert_eq!(ipam.allocate("c1", "eth0").expect("again"), a);
    }

    #[test]
    fn state_survives_reopen_and_release_frees() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = ipam(dir.path()).allocate("c1", "eth0").expect("a");
        let reopened = ipam(dir.path());
        let b = reopened.allocate("c2", "eth0").expect("b");
        assert_ne!(a, b);
        assert_eq!(reopened.release("c1", "eth0").expect("release"), Some(a));
        assert_eq!(reopened.release("c1", "eth0").expect("again"), None);
        // Released addresses are not reused at once.
        let c = reopened.allocate("c3", "eth0").expect("c");
        assert!(c != a && c != b);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let small = Ipam::open(dir.path(), "10.42.9.0/30".parse().expect("cidr")).expect("open");
        assert_eq!(
            small.allocate("c1", "eth0").expect("one"),
            Ipv4Addr::new(10, 42, 9, 2)
        );
        assert!(matches!(
            small.allocate("c2", "eth0"),
            Err(Error::Exhausted(_))
        ));
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let ipam = ipam(&path);
                    (0..10)
                        .map(|i| ipam.allocate(&format!("c{t}-{i}"), "eth0").expect("alloc"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80);
    }
}
