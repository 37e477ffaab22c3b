//! systemd's notify protocol (`Type=notify`): `READY=1` once the server
//! serves (and its node is registered), `STOPPING=1` when it begins to shut
//! down. A datagram to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket); nothing when the variable is unset. A few lines, so no crate.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where to send notifications, taken from the environment once.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    address: Option<String>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` out of the environment, so the processes kelp
    /// starts (containerd speaks the protocol too) do not report as kelp.
    ///
    /// # Safety
    /// Changes the environment: call while the process has one thread.
    pub unsafe fn from_env() -> Self {
        let address = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|a| !a.is_empty());
        if address.is_some() {
            // SAFETY: the caller guarantees no other thread runs.
            unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        }
        Self { address }
    }

    /// A notifier sending to `address` (a socket path or `@abstract`).
    pub fn to(address: &str) -> Self {
        Self {
            address: Some(address.to_string()),
        }
    }

    /// Sends `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    fn send(&self, message: &str) {
        let Some(address) = &self.address else {
            return;
        };
        if let Err(e) = send_to(address, message) {
            tracing::warn!(err = %e, socket = %address, "notifying systemd");
        }
    }
}

fn send_to(address: &str, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let target = match address.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(address)?,
    };
    socket.send_to_addr(message.as_bytes(), &target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap());
        notifier.ready("up");
        notifier.stopping();
        let mut buffer = [0u8; 256];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=up\n");
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("kelp-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(&format!("@{name}")).stopping();
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1\n");
        // Unset: nothing is sent, nothing fails.
        Notifier::default().ready("x");
    }
}
