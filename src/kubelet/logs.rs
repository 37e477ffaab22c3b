//! Container logs: reading the CRI log format containerd writes
//! (`<time> <stream> <P|F> <content>`) for `kubectl logs` (tail, since,
//! timestamps, limit, follow), and rotating the files by size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// What `kubectl logs` asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Keep streaming new lines while the container runs.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

/// One parsed line of a CRI log file.
#[derive(Debug, Clone, PartialEq)]
pub struct CriLine<'a> {
    /// RFC 3339 (nanoseconds) time the runtime read the line.
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// A partial line, continued by the next one.
    pub partial: bool,
    /// The content, without the newline.
    pub content: &'a [u8],
}

/// Parses one CRI log line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    Some(CriLine {
        time,
        stream,
        partial: tag.first() == Some(&b'P'),
        content,
    })
}

/// Turns CRI lines into what kubectl prints, applying since/timestamps.
/// Partial lines are joined with their continuation.
#[derive(Default)]
struct Renderer {
    pending: Vec<u8>,
    pending_time: Option<String>,
}

impl Renderer {
    fn line(&mut self, raw: &[u8], opts: &LogOptions, out: &mut Vec<u8>) {
        let Some(line) = parse_line(raw) else { return };
        if let Some(since) = opts.since
            && let Ok(t) = chrono::DateTime::parse_from_rfc3339(line.time)
            && t < since
        {
            return;
        }
        if self.pending_time.is_none() {
            self.pending_time = Some(line.time.to_string());
        }
        self.pending.extend_from_slice(line.content);
        if line.partial {
            return;
        }
        if opts.timestamps {
            out.extend_from_slice(self.pending_time.as_deref().unwrap_or(line.time).as_bytes());
            out.push(b' ');
        }
        out.append(&mut self.pending);
        out.push(b'\n');
        self.pending_time = None;
    }
}

/// Complete lines of the file from `start`, with the offset after the last one.
fn complete_lines(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut lines = Vec::new();
    let mut consumed = 0;
    while let Some(i) = buf[consumed..].iter().position(|b| *b == b'\n') {
        lines.push(&buf[consumed..consumed + i]);
        consumed += i + 1;
    }
    (lines, consumed)
}

/// Streams the log at `path` into `tx`. With `follow`, keeps reading until
/// `running` says the container stopped (and nothing is left) or the
/// receiver hangs up.
pub async fn stream<F, Fut>(path: PathBuf, opts: LogOptions, running: F, tx: mpsc::Sender<Bytes>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return;
    };
    let mut content = Vec::new();
    if file.read_to_end(&mut content).await.is_err() {
        return;
    }
    let (mut lines, consumed) = complete_lines(&content);
    if let Some(n) = opts.tail_lines {
        // Count only whole log lines (a partial line belongs to the next).
        let mut kept = 0;
        let mut start = lines.len();
        while start > 0 && kept < n {
            start -= 1;
            if parse_line(lines[start]).is_some_and(|l| !l.partial) {
                kept += 1;
            }
        }
        while start > 0 && parse_line(lines[start - 1]).is_some_and(|l| l.partial) {
            start -= 1;
        }
        lines.drain(..start);
    }
    let mut renderer = Renderer::default();
    let mut sent = 0usize;
    let mut out = Vec::new();
    for line in lines {
        renderer.line(line, &opts, &mut out);
    }
    if !send(&tx, &mut out, &opts, &mut sent).await || !opts.follow {
        return;
    }
    let mut offset = consumed as u64;
    let mut carry: Vec<u8> = content[consumed..].to_vec();
    drop(content);
    let mut idle_checks = 0u32;
    loop {
        let mut chunk = Vec::new();
        let read = file.read_to_end(&mut chunk).await.unwrap_or(0);
        if read > 0 {
            idle_checks = 0;
            offset += read as u64;
            carry.extend_from_slice(&chunk);
            let (lines, consumed) = complete_lines(&carry);
            for line in lines {
                renderer.line(line, &opts, &mut out);
            }
            carry.drain(..consumed);
            if !send(&tx, &mut out, &opts, &mut sent).await {
                return;
            }
            continue;
        }
        if tx.is_closed() {
            return;
        }
        // Rotated: the path now names a new, shorter file.
        if let Ok(meta) = tokio::fs::metadata(&path).await
            && meta.len() < offset
            && let Ok(mut fresh) = tokio::fs::File::open(&path).await
        {
            let _ = fresh.seek(std::io::SeekFrom::Start(0)).await;
            file = fresh;
            offset = 0;
            carry.clear();
            continue;
        }
        idle_checks += 1;
        if idle_checks.is_multiple_of(5) && !running().await {
            // One last read for what was written before the exit.
            let mut rest = Vec::new();
            let _ = file.read_to_end(&mut rest).await;
            carry.extend_from_slice(&rest);
            let (lines, _) = complete_lines(&carry);
            for line in lines {
                renderer.line(line, &opts, &mut out);
            }
            send(&tx, &mut out, &opts, &mut sent).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends what is buffered, honouring limitBytes; false when done.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    out: &mut Vec<u8>,
    opts: &LogOptions,
    sent: &mut usize,
) -> bool {
    if out.is_empty() {
        return true;
    }
    let mut data = std::mem::take(out);
    let mut more = true;
    if let Some(limit) = opts.limit_bytes {
        let room = limit.saturating_sub(*sent);
        if data.len() >= room {
            data.truncate(room);
            more = false;
        }
    }
    *sent += data.len();
    if !data.is_empty() && tx.send(Bytes::from(data)).await.is_err() {
        return false;
    }
    more
}

/// Rotates `path` when it exceeds `max_size`: renames it with a timestamp
/// suffix, asks the runtime to reopen it (via `reopen`), compresses the
/// older rotated files (`.gz`, all but the newest, as upstream's kubelet)
/// and keeps at most `max_files - 1` rotated files. Returns whether it
/// rotated.
pub async fn rotate_if_needed<F, Fut>(
    path: &Path,
    max_size: u64,
    max_files: usize,
    reopen: F,
) -> bool
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let Ok(meta) = tokio::fs::metadata(path).await else {
        return false;
    };
    if meta.len() <= max_size {
        return false;
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S%.6f");
    let rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
    if tokio::fs::rename(path, &rotated).await.is_err() {
        return false;
    }
    if !reopen().await {
        // The runtime still writes to the renamed file; put it back.
        let _ = tokio::fs::rename(&rotated, path).await;
        return false;
    }
    prune_rotated(path, max_files.saturating_sub(1)).await;
    compress_rotated(path, &rotated).await;
    true
}

/// Gzips every rotated file of `path` but `newest` (written to `.gz.tmp`,
/// then renamed, so a crash leaves no half file under the final name).
async fn compress_rotated(path: &Path, newest: &Path) {
    for old in rotated_files(path).await {
        if old == newest || old.extension().is_some_and(|e| e == "gz" || e == "tmp") {
            continue;
        }
        let compressed = tokio::task::spawn_blocking(move || gzip_file(&old)).await;
        if let Ok(Err(e)) = compressed {
            tracing::warn!(err = %e, "compressing a rotated log failed");
        }
    }
}

fn gzip_file(path: &Path) -> std::io::Result<()> {
    let target = PathBuf::from(format!("{}.gz", path.display()));
    let temporary = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let mut input = std::fs::File::open(path)?;
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&temporary)?,
        flate2::Compression::default(),
    );
    std::io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&temporary, &target)?;
    std::fs::remove_file(path)
}

/// The rotated files of `path` (`<name>.<timestamp>[.gz]`), oldest first.
async fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return Vec::new();
    };
    let mut rotated = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) {
            rotated.push(entry.path());
        }
    }
    rotated.sort();
    rotated
}

/// Deletes the oldest rotated files beyond `keep`.
async fn prune_rotated(path: &Path, keep: usize) {
    let rotated = rotated_files(path).await;
    let excess = rotated.len().saturating_sub(keep);
    for old in rotated.into_iter().take(excess) {
        let _ = tokio::fs::remove_file(old).await;
    }
}

/// Parses a Kubernetes quantity of bytes (`10Mi`) for the rotation flag.
pub fn parse_size(s: &str) -> Option<u64> {
    crate::api::values::quantity::value(s).and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.000000001Z stdout F 0: first\n\
2026-01-01T00:00:01.000000000Z stderr P par\n\
2026-01-01T00:00:01.500000000Z stderr F tial\n\
2026-01-01T00:00:02.000000000Z stdout F 2: third\n";

    async fn read(opts: LogOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        stream(path, opts, || async { false }, tx).await;
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_parse_into_time_stream_tag_and_content() {
        let l = parse_line(b"2026-01-01T00:00:00Z stdout P hello world").unwrap();
        assert_eq!(
            (l.time, l.stream, l.partial, l.content),
            ("2026-01-01T00:00:00Z", "stdout", true, &b"hello world"[..])
        );
        let empty = parse_line(b"2026-01-01T00:00:00Z stdout F").unwrap();
        assert_eq!(empty.content, b"");
        assert!(parse_line(b"garbage").is_none());
    }

    #[tokio::test]
    async fn partial_lines_join_and_tail_counts_whole_lines() {
        assert_eq!(
            read(LogOptions::default()).await,
            "0: first\npartial\n2: third\n"
        );
        let tail = read(LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        })
        .await;
        assert_eq!(tail, "partial\n2: third\n");
        let stamped = read(LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..Default::default()
        })
        .await;
        assert_eq!(stamped, "2026-01-01T00:00:02.000000000Z 2: third\n");
    }

    #[tokio::test]
    async fn since_and_limit_bytes_cut_the_output() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:01.9Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            read(LogOptions {
                since: Some(since),
                ..Default::default()
            })
            .await,
            "2: third\n"
        );
        assert_eq!(
            read(LogOptions {
                limit_bytes: Some(4),
                ..Default::default()
            })
            .await,
            "0: f"
        );
    }

    #[tokio::test]
    async fn rotation_renames_reopens_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        for round in 0..4 {
            std::fs::write(&path, vec![b'x'; 100]).unwrap();
            assert!(
                rotate_if_needed(&path, 50, 3, || async { true }).await,
                "round {round}"
            );
        }
        let mut rotated: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        rotated.sort();
        assert_eq!(
            rotated.len(),
            2,
            "max-files 3 keeps 2 rotated files beside the live one (not yet recreated here)"
        );
        // The older one is compressed, the newest is not.
        assert!(rotated[0].ends_with(".gz"), "{rotated:?}");
        assert!(!rotated[1].ends_with(".gz"), "{rotated:?}");
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut flate2::read::GzDecoder::new(
                std::fs::File::open(dir.path().join(&rotated[0])).unwrap(),
            ),
            &mut text,
        )
        .unwrap();
        assert_eq!(text.len(), 100);
        std::fs::write(&path, b"small").unwrap();
        assert!(!rotate_if_needed(&path, 50, 3, || async { true }).await);
        assert!(!rotate_if_needed(&dir.path().join("missing"), 50, 3, || async { true }).await);
    }
}
