//! Work inside a pod's network namespace from the node: connecting to a
//! pod's localhost for port-forwarding.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The network namespace of a process.
pub fn of_process(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Connects to `127.0.0.1:port` inside the namespace at `netns`. The socket
/// is made on a short-lived thread that joined the namespace, so no other
/// thread changes namespace; it stays bound to the pod's namespace.
pub fn connect_localhost(netns: &Path, port: u16) -> std::io::Result<TcpStream> {
    let ns = std::fs::File::open(netns)?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5))
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_inside_its_own_namespace() {
        // Our own namespace stands in for a pod's: a listener here is reachable.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect_localhost(&of_process(std::process::id()), port).unwrap();
        assert_eq!(stream.peer_addr().unwrap().port(), port);
    }
}
