//! A SPDY/3.1 server session, as kubectl's client (client-go over
//! spdystream) uses it for exec and port-forward: the peer opens streams
//! (SYN_STREAM with headers), the server accepts each (SYN_REPLY) and data
//! flows in DATA frames until FIN. Header blocks are zlib-compressed with
//! the SPDY dictionary, one compression context per direction. Flow control
//! frames are accepted and ignored, as spdystream does.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

mod dictionary;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted (header blocks and data are far smaller in practice).
const MAX_FRAME: usize = 16 << 20;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Largest DATA payload sent in one frame.
const MAX_DATA: usize = 32 * 1024;

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The transport failed.
    #[error("spdy transport: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3.
    #[error("spdy protocol: {0}")]
    Protocol(String),
}

/// Header names and values of a stream (names lowercase, as sent).
pub type Headers = HashMap<String, String>;

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A new stream from the peer.
    SynStream {
        /// Stream id.
        id: u32,
        /// Its headers.
        headers: Headers,
        /// The peer will send nothing more.
        fin: bool,
    },
    /// Data on a stream.
    Data {
        /// Stream id.
        id: u32,
        /// Payload.
        data: Bytes,
        /// Last frame from the sender on this stream.
        fin: bool,
    },
    /// The peer abandons a stream.
    RstStream {
        /// Stream id.
        id: u32,
    },
    /// A ping to echo.
    Ping {
        /// Ping id.
        id: u32,
    },
    /// The peer is done with the session.
    GoAway,
    /// Frames kelp accepts and ignores (SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY, unknown).
    Ignored,
}

/// Header-block compression state of one direction.
pub struct HeaderCodec {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    deflate_primed: bool,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        HeaderCodec {
            inflate: flate2::Decompress::new(true),
            deflate: flate2::Compress::new(flate2::Compression::default(), true),
            deflate_primed: false,
        }
    }
}

impl HeaderCodec {
    /// Decompresses one header block (continuing the connection's stream).
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol("header block too large".into()));
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before_in = self.inflate.total_in();
            let result =
                self.inflate
                    .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync);
            let consumed = (self.inflate.total_in() - before_in) as usize;
            input = &input[consumed..];
            match result {
                Ok(_) => {
                    if input.is_empty() && out.capacity() > out.len() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary::DICTIONARY)
                        .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("header block: {e}"))),
            }
        }
        parse_header_block(&out)
    }

    /// Compresses a header block.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        if !self.deflate_primed {
            self.deflate
                .set_dictionary(dictionary::DICTIONARY)
                .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
            self.deflate_primed = true;
        }
        let mut raw = BytesMut::new();
        raw.put_u32(headers.len() as u32);
        for (name, value) in headers {
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.to_ascii_lowercase().as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Sync)
                .map_err(|e| SpdyError::Protocol(format!("compressing headers: {e}")))?;
            input = &input[(self.deflate.total_in() - before_in) as usize..];
            if input.is_empty() && out.capacity() > out.len() {
                break;
            }
        }
        Ok(out)
    }
}

fn parse_header_block(mut raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Protocol("truncated header block".into());
    let take = |raw: &mut &[u8]| -> Result<Vec<u8>, SpdyError> {
        if raw.len() < 4 {
            return Err(bad());
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(bad());
        }
        let (v, rest) = raw.split_at(len);
        let v = v.to_vec();
        *raw = rest;
        Ok(v)
    };
    if raw.len() < 4 {
        return Err(bad());
    }
    let count = raw.get_u32();
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(&take(&mut raw)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&take(&mut raw)?).into_owned();
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    codec: &mut HeaderCodec,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let flags = head[4];
    let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if length > MAX_FRAME {
        return Err(SpdyError::Protocol(format!("frame of {length} bytes")));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    let mut body = &body[..];
    if head[0] & 0x80 == 0 {
        let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            id,
            data: Bytes::copy_from_slice(body),
            fin: flags & FLAG_FIN != 0,
        }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(SpdyError::Protocol(format!("SPDY version {version}")));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |n: usize, body: &[u8]| {
        if body.len() < n {
            Err(SpdyError::Protocol(format!(
                "control frame {kind} too short"
            )))
        } else {
            Ok(())
        }
    };
    Ok(Some(match kind {
        SYN_STREAM => {
            need(10, body)?;
            let id = body.get_u32() & 0x7fff_ffff;
            body.advance(6); // associated stream, priority, slot
            let headers = codec.decode(body)?;
            Frame::SynStream {
                id,
                headers,
                fin: flags & FLAG_FIN != 0,
            }
        }
        SYN_REPLY | HEADERS => {
            // Peers do not send these to a server in kubelet's protocols, but
            // their header blocks still advance the compression context.
            need(4, body)?;
            body.advance(4);
            codec.decode(body)?;
            Frame::Ignored
        }
        RST_STREAM => {
            need(8, body)?;
            Frame::RstStream {
                id: body.get_u32() & 0x7fff_ffff,
            }
        }
        PING => {
            need(4, body)?;
            Frame::Ping { id: body.get_u32() }
        }
        GOAWAY => Frame::GoAway,
        SETTINGS | WINDOW_UPDATE => Frame::Ignored,
        _ => Frame::Ignored,
    }))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// A DATA frame.
pub fn data_frame(id: u32, data: &[u8], fin: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(data);
    out
}

/// What the session's writer is asked to send.
#[derive(Debug)]
enum Outgoing {
    Reply(u32),
    Data(u32, Bytes, bool),
    Ping(u32),
    Reset(u32),
    GoAway,
}

/// A stream the peer opened, accepted by the server.
pub struct Stream {
    /// Stream id.
    pub id: u32,
    /// The headers it was opened with.
    pub headers: Headers,
    /// Data from the peer; closed at the peer's FIN or reset.
    pub incoming: mpsc::Receiver<Bytes>,
    /// Sends data to the peer.
    pub writer: StreamWriter,
}

/// The sending half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Outgoing>,
}

impl StreamWriter {
    /// Sends data (split into frames); false once the session is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(MAX_DATA) {
            if self
                .out
                .send(Outgoing::Data(
                    self.id,
                    Bytes::copy_from_slice(chunk),
                    false,
                ))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Ends this side of the stream (FIN).
    pub async fn finish(&self) {
        let _ = self
            .out
            .send(Outgoing::Data(self.id, Bytes::new(), true))
            .await;
    }

    /// Abandons the stream.
    pub async fn reset(&self) {
        let _ = self.out.send(Outgoing::Reset(self.id)).await;
    }
}

/// Handle to a running session: accepted streams arrive on `streams`.
pub struct Session {
    /// Streams the peer opened (each already answered with SYN_REPLY).
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Outgoing>,
}

impl Session {
    /// Starts serving `io`; reading and writing run on their own tasks.
    pub fn serve<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(io);
        let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(64);
        let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
        // Writer: frames in order; its compression context is its own.
        tokio::spawn(async move {
            let mut codec = HeaderCodec::default();
            while let Some(message) = out_rx.recv().await {
                let bytes = match message {
                    Outgoing::Reply(id) => match codec.encode(&[]) {
                        Ok(block) => {
                            let mut payload = id.to_be_bytes().to_vec();
                            payload.extend_from_slice(&block);
                            control(SYN_REPLY, 0, &payload)
                        }
                        Err(_) => return,
                    },
                    Outgoing::Data(id, data, fin) => data_frame(id, &data, fin),
                    Outgoing::Ping(id) => control(PING, 0, &id.to_be_bytes()),
                    Outgoing::Reset(id) => {
                        let mut payload = id.to_be_bytes().to_vec();
                        payload.extend_from_slice(&5u32.to_be_bytes()); // CANCEL
                        control(RST_STREAM, 0, &payload)
                    }
                    Outgoing::GoAway => {
                        let _ = writer.write_all(&control(GOAWAY, 0, &[0u8; 8])).await;
                        let _ = writer.shutdown().await;
                        return;
                    }
                };
                if writer.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        // Reader: routes frames to streams.
        let out = out_tx.clone();
        tokio::spawn(async move {
            let mut codec = HeaderCodec::default();
            let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
            loop {
                let frame = match read_frame(&mut reader, &mut codec).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) | Err(_) => break,
                };
                match frame {
                    Frame::SynStream { id, headers, fin } => {
                        let (tx, rx) = mpsc::channel(64);
                        if !fin {
                            open.insert(id, tx);
                        }
                        if out.send(Outgoing::Reply(id)).await.is_err() {
                            break;
                        }
                        let stream = Stream {
                            id,
                            headers,
                            incoming: rx,
                            writer: StreamWriter {
                                id,
                                out: out.clone(),
                            },
                        };
                        if streams_tx.send(stream).await.is_err() {
                            break;
                        }
                    }
                    Frame::Data { id, data, fin } => {
                        if let Some(tx) = open.get(&id)
                            && !data.is_empty()
                            && tx.send(data).await.is_err()
                        {
                            open.remove(&id);
                        }
                        if fin {
                            open.remove(&id);
                        }
                    }
                    Frame::RstStream { id } => {
                        open.remove(&id);
                    }
                    Frame::Ping { id } => {
                        let _ = out.send(Outgoing::Ping(id)).await;
                    }
                    Frame::GoAway => break,
                    Frame::Ignored => {}
                }
            }
        });
        Session {
            streams: streams_rx,
            out: out_tx,
        }
    }

    /// Ends the session (GOAWAY, then the connection closes).
    pub async fn close(&self) {
        let _ = self.out.send(Outgoing::GoAway).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client-side SYN_STREAM, as spdystream writes it.
    fn syn_stream(codec: &mut HeaderCodec, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&codec.encode(headers).unwrap());
        control(SYN_STREAM, 0, &payload)
    }

    #[test]
    fn header_blocks_round_trip_across_one_compression_context() {
        let mut sender = HeaderCodec::default();
        let mut receiver = HeaderCodec::default();
        for i in 0..3 {
            let port = format!("{}", 8000 + i);
            let block = sender
                .encode(&[("streamType", "data"), ("port", &port)])
                .unwrap();
            let headers = receiver.decode(&block).unwrap();
            assert_eq!(headers["streamtype"], "data");
            assert_eq!(headers["port"], port);
        }
    }

    #[tokio::test]
    async fn a_session_accepts_streams_and_carries_data_both_ways() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::serve(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut client_codec = HeaderCodec::default();
        client_write
            .write_all(&syn_stream(
                &mut client_codec,
                1,
                &[("streamtype", "stdin")],
            ))
            .await
            .unwrap();
        client_write
            .write_all(&data_frame(1, b"hello", true))
            .await
            .unwrap();
        let mut stream = session.streams.recv().await.unwrap();
        assert_eq!(stream.headers["streamtype"], "stdin");
        assert_eq!(
            stream.incoming.recv().await.unwrap(),
            Bytes::from_static(b"hello")
        );
        assert!(
            stream.incoming.recv().await.is_none(),
            "FIN ends the stream"
        );
        stream.writer.send(b"world").await;
        stream.writer.finish().await;
        let mut reply_codec = HeaderCodec::default();
        let reply = read_frame(&mut client_read, &mut reply_codec)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            reply,
            Frame::Ignored,
            "SYN_REPLY (decoded, ignored by a server-side reader)"
        );
        let data = read_frame(&mut client_read, &mut reply_codec)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            data,
            Frame::Data {
                id: 1,
                data: Bytes::from_static(b"world"),
                fin: false
            }
        );
        let fin = read_frame(&mut client_read, &mut reply_codec)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            fin,
            Frame::Data {
                id: 1,
                data: Bytes::new(),
                fin: true
            }
        );
        client_write
            .write_all(&control(PING, 0, &7u32.to_be_bytes()))
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut client_read, &mut reply_codec)
                .await
                .unwrap()
                .unwrap(),
            Frame::Ping { id: 7 }
        );
    }
}
