//! Remote command streams of `kubectl exec`: the WebSocket protocol
//! `v5.channel.k8s.io` (one binary message per chunk, first byte the channel:
//! 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, 255 close) and, over
//! SPDY (see spdy.rs), `v4.channel.k8s.io` (one stream per channel, kubectl's
//! fallback). Both end with a metav1.Status carrying the exit code.

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::exec::{ExecOptions, ExecProcess, error_status, exit_status};
use super::spdy::{Session, Stream, StreamWriter};

/// The WebSocket subprotocol kelp speaks for exec and attach.
pub const V5: &str = "v5.channel.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Output of the process, tagged with its channel.
async fn pump(
    mut pipe: tokio::net::unix::pipe::Receiver,
    channel: u8,
    tx: mpsc::Sender<(u8, Bytes)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send((channel, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Resize payload: `{"Width":W,"Height":H}`.
pub fn parse_resize(payload: &[u8]) -> Option<(u32, u32)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    Some((v["Width"].as_u64()? as u32, v["Height"].as_u64()? as u32))
}

/// Runs an exec session over a v5 WebSocket until the process exits.
pub async fn exec_websocket(socket: WebSocket, mut process: ExecProcess, command: Vec<String>) {
    let (mut sink, mut source) = socket.split();
    let (tx, mut output) = mpsc::channel::<(u8, Bytes)>(16);
    let mut pumps = Vec::new();
    if let Some(out) = process.stdout.take() {
        pumps.push(tokio::spawn(pump(out, STDOUT, tx.clone())));
    }
    if let Some(err) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(err, STDERR, tx.clone())));
    }
    drop(tx);
    let mut output_done = false;
    let mut client_gone = false;
    let exit = process.wait();
    tokio::pin!(exit);
    let mut exit_code: Option<u32> = None;
    loop {
        tokio::select! {
            code = &mut exit, if exit_code.is_none() => {
                exit_code = Some(code.unwrap_or(255));
            }
            chunk = output.recv(), if !output_done => match chunk {
                Some((channel, data)) => {
                    let mut frame = Vec::with_capacity(data.len() + 1);
                    frame.push(channel);
                    frame.extend_from_slice(&data);
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                None => output_done = true,
            },
            message = source.next(), if !client_gone => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    STDIN => {
                        if let Some(stdin) = process.stdin.as_mut() {
                            use tokio::io::AsyncWriteExt;
                            if stdin.write_all(&data[1..]).await.is_err() {
                                process.close_stdin().await;
                            }
                        }
                    }
                    RESIZE => {
                        if let Some((w, h)) = parse_resize(&data[1..]) {
                            process.resize(w, h).await;
                        }
                    }
                    CLOSE if data.get(1) == Some(&STDIN) => process.close_stdin().await,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_gone = true;
                    process.kill().await;
                }
                Some(Ok(_)) => {}
            },
        }
        if exit_code.is_some() && output_done {
            break;
        }
        if client_gone && exit_code.is_some() {
            break;
        }
    }
    for p in pumps {
        p.abort();
    }
    if !client_gone {
        let status = exit_status(&command, exit_code.unwrap_or(255));
        let mut frame = vec![STATUS];
        frame.extend_from_slice(&serde_json::to_vec(&status).unwrap_or_default());
        let _ = sink.send(Message::Binary(frame.into())).await;
        let _ = sink.send(normal_close()).await;
    }
    process.cleanup().await;
}

/// A close frame with code 1000: the client treats it as the end of every stream.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Sends a failure Status and closes (the command could not start).
pub async fn fail_websocket(socket: WebSocket, status: Value) {
    let (mut sink, _) = socket.split();
    let mut frame = vec![STATUS];
    frame.extend_from_slice(&serde_json::to_vec(&status).unwrap_or_default());
    let _ = sink.send(Message::Binary(frame.into())).await;
    let _ = sink.send(normal_close()).await;
}

/// The remotecommand protocol kelp chooses over SPDY.
pub const SPDY_V4: &str = "v4.channel.k8s.io";

/// Copies a pipe into a SPDY stream, then ends the stream.
async fn pipe_to_stream(mut pipe: tokio::net::unix::pipe::Receiver, writer: StreamWriter) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !writer.send(&buf[..n]).await {
                    return;
                }
            }
        }
    }
}

/// Collects the streams kubectl opens for a remote command (error first,
/// then stdin, stdout, stderr, resize as requested), by `streamtype`.
async fn remotecommand_streams(
    session: &mut Session,
    options: &ExecOptions,
) -> Option<std::collections::HashMap<String, Stream>> {
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout || options.tty)
        + usize::from(options.stderr && !options.tty)
        + usize::from(options.tty);
    let mut streams = std::collections::HashMap::new();
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(30));
    tokio::pin!(deadline);
    while streams.len() < expected {
        tokio::select! {
            stream = session.streams.recv() => {
                let stream = stream?;
                let kind = stream.headers.get("streamtype").cloned().unwrap_or_default();
                streams.insert(kind, stream);
            }
            _ = &mut deadline => return None,
        }
    }
    Some(streams)
}

/// Runs an exec session over SPDY (remotecommand v4).
pub async fn exec_spdy(
    mut session: Session,
    channel: tonic::transport::Channel,
    container_id: String,
    options: ExecOptions,
) {
    let Some(mut streams) = remotecommand_streams(&mut session, &options).await else {
        session.close().await;
        return;
    };
    let Some(error) = streams.remove("error") else {
        session.close().await;
        return;
    };
    let mut process = match ExecProcess::start(&channel, &container_id, &options).await {
        Ok(p) => p,
        Err(e) => {
            let status = error_status(&format!("{e:#}"));
            finish_remotecommand(&session, &error, &streams, &status).await;
            return;
        }
    };
    let mut tasks = Vec::new();
    if let (Some(out), Some(stream)) = (process.stdout.take(), streams.get("stdout")) {
        tasks.push(tokio::spawn(pipe_to_stream(out, stream.writer.clone())));
    }
    if let (Some(err), Some(stream)) = (process.stderr.take(), streams.get("stderr")) {
        tasks.push(tokio::spawn(pipe_to_stream(err, stream.writer.clone())));
    }
    let mut stdin_stream = streams.remove("stdin");
    let mut resize_stream = streams.remove("resize");
    let exit = process.wait();
    tokio::pin!(exit);
    let code = loop {
        tokio::select! {
            code = &mut exit => break code.unwrap_or(255),
            data = async { stdin_stream.as_mut()?.incoming.recv().await }, if stdin_stream.is_some() => {
                match (data, process.stdin.as_mut()) {
                    (Some(data), Some(stdin)) => {
                        use tokio::io::AsyncWriteExt;
                        if stdin.write_all(&data).await.is_err() {
                            process.close_stdin().await;
                        }
                    }
                    _ => {
                        stdin_stream = None;
                        process.close_stdin().await;
                    }
                }
            }
            data = async { resize_stream.as_mut()?.incoming.recv().await }, if resize_stream.is_some() => {
                match data {
                    Some(data) => {
                        // One JSON object per resize event; they may arrive together.
                        let sizes: Vec<(u32, u32)> = serde_json::Deserializer::from_slice(&data)
                            .into_iter::<Value>()
                            .flatten()
                            .filter_map(|e| Some((e["Width"].as_u64()? as u32, e["Height"].as_u64()? as u32)))
                            .collect();
                        for (w, h) in sizes {
                            process.resize(w, h).await;
                        }
                    }
                    None => resize_stream = None,
                }
            }
        }
    };
    // Output written before the exit still drains to the client.
    for task in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    let status = exit_status(&options.command, code);
    finish_remotecommand(&session, &error, &streams, &status).await;
    process.cleanup().await;
}

/// Sends the final Status on the error stream, ends every stream and the session.
async fn finish_remotecommand(
    session: &Session,
    error: &Stream,
    streams: &std::collections::HashMap<String, Stream>,
    status: &Value,
) {
    error
        .writer
        .send(&serde_json::to_vec(status).unwrap_or_default())
        .await;
    error.writer.finish().await;
    for stream in streams.values() {
        stream.writer.finish().await;
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_carry_width_and_height() {
        assert_eq!(
            parse_resize(b"{\"Width\":100,\"Height\":30}\n"),
            Some((100, 30))
        );
        assert_eq!(parse_resize(b"nonsense"), None);
    }
}
