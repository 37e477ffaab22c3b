//! `kubectl port-forward` (protocol `portforward.k8s.io` over SPDY): for
//! every connection, the client opens an error stream and a data stream
//! sharing a `requestid` and naming a `port`; kelp connects to that port on
//! the pod's localhost (inside its network namespace) and copies bytes both
//! ways. The same SPDY session also arrives tunnelled in a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`: binary messages carry the SPDY bytes).
//! Client libraries speak the channel protocol instead
//! (`v4.channel.k8s.io`, or none): one connection per port named in the
//! query, each on a data channel (2i) and an error channel (2i+1) whose
//! first frame is the port, little-endian; every message starts with its
//! channel's number.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy::{Session, Stream};

/// The SPDY subprotocol of port-forwarding.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol that tunnels it.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The channel WebSocket subprotocol of client libraries.
pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves port-forward requests on a session until the client leaves.
pub async fn serve(mut session: Session, netns: PathBuf, pod: String) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let request = stream.headers.get("requestid").cloned().unwrap_or_else(|| {
            // Clients before request ids: the error stream precedes its data stream.
            let id = if stream.headers.get("streamtype").map(String::as_str) == Some("data") {
                stream.id.saturating_sub(2)
            } else {
                stream.id
            };
            id.to_string()
        });
        let pair = pending.entry(request.clone()).or_default();
        match stream.headers.get("streamtype").map(String::as_str) {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            _ => {
                stream.writer.reset().await;
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Pair {
                error: Some(error),
                data: Some(data),
            } = pending.remove(&request).unwrap_or_default()
            else {
                continue;
            };
            tokio::spawn(forward(error, data, netns.clone(), pod.clone()));
        }
    }
}

/// The ports a channel port-forward names (`port` or `ports`, repeated or
/// comma-separated).
pub fn query_ports(query: &str) -> Vec<u16> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "port" || k == "ports")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|p| p.trim().parse::<u16>().ok())
                .filter(|p| *p > 0)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Connects to `port` on the pod's localhost.
async fn connect(netns: &std::path::Path, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.to_path_buf();
    tokio::task::spawn_blocking(move || crate::network::netns::connect_localhost(&netns, port))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(s)
        })
}

/// Serves a channel port-forward: one connection per port, closed (with
/// the WebSocket) once every pod side has finished.
pub async fn serve_channels(socket: WebSocket, ports: Vec<u16>, netns: PathBuf, pod: String) {
    let (mut sink, mut source) = socket.split();
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if sink
                .send(Message::Binary(Bytes::from(frame)))
                .await
                .is_err()
            {
                return;
            }
        }
        let close = axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    });
    let frame = |channel: usize, data: &[u8]| {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel as u8);
        frame.extend_from_slice(data);
        frame
    };
    let mut to_pods = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let port_bytes = port.to_le_bytes();
        let _ = out.send(frame(2 * i, &port_bytes)).await;
        let _ = out.send(frame(2 * i + 1, &port_bytes)).await;
        match connect(&netns, *port).await {
            Ok(tcp) => {
                let (mut from_pod, to_pod) = tcp.into_split();
                to_pods.push(Some(to_pod));
                let out = out.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match from_pod.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if out.send(frame(2 * i, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                let message = format!("error forwarding port {port} to pod {pod}: {e}");
                let _ = out.send(frame(2 * i + 1, message.as_bytes())).await;
                to_pods.push(None);
            }
        }
    }
    drop(out);
    let downstream = async {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = data.split_first() else {
                continue;
            };
            let channel = usize::from(channel);
            if channel % 2 == 0
                && let Some(Some(to_pod)) = to_pods.get_mut(channel / 2)
                && to_pod.write_all(payload).await.is_err()
            {
                to_pods[channel / 2] = None;
            }
        }
        for to_pod in to_pods.iter_mut().flatten() {
            let _ = to_pod.shutdown().await;
        }
    };
    // The session ends when the pod sides are done (or the client leaves).
    tokio::select! {
        _ = futures::future::join_all(readers) => {}
        _ = downstream => {}
    }
    let _ = writer.await;
}

async fn forward(error: Stream, mut data: Stream, netns: PathBuf, pod: String) {
    let port: Option<u16> = data.headers.get("port").and_then(|p| p.parse().ok());
    let Some(port) = port.filter(|p| *p > 0) else {
        error.writer.send(b"invalid port").await;
        error.writer.finish().await;
        data.writer.finish().await;
        return;
    };
    let tcp = match connect(&netns, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {pod}: {e}");
            error.writer.send(message.as_bytes()).await;
            error.writer.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let writer = data.writer.clone();
    let upstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.send(&buf[..n]).await {
                        break;
                    }
                }
            }
        }
        writer.finish().await;
    };
    let downstream = async move {
        while let Some(chunk) = data.incoming.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    tokio::join!(upstream, downstream);
    error.writer.finish().await;
}

/// Carries the bytes of a SPDY session in WebSocket binary messages.
pub fn tunnel(socket: WebSocket) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let (mut sink, mut source) = socket.split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
            }
        }
        let close = axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    theirs
}
