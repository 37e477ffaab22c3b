//! What the store writes to disk, by cause: the bytes the writer thread
//! has the kernel write (`/proc/thread-self/io` `write_bytes`, as
//! `/proc/PID/io` counts them for the process) around each commit,
//! checkpoint and space-freeing step. A commit's bytes are split among the
//! resources it wrote, in proportion to their writes (a Lease renewal and
//! a Node status in one commit share its pages). Served as
//! `kelp_store_disk_written_bytes_total{cause}`: what an SD card's wear
//! comes from at idle.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::telemetry::{Descriptor, Metrics};

/// Cause of the bytes a checkpoint copies from the WAL into the database.
pub const CHECKPOINT: &str = "checkpoint";
/// Cause of the bytes freeing space (incremental vacuum) writes.
pub const FREEING_SPACE: &str = "freeing_space";
/// Cause of a commit's bytes with no key of its own (a compaction).
pub const COMPACTION: &str = "compaction";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
}

/// The writer thread's disk writes by cause.
#[derive(Clone, Default)]
pub struct DiskWrites {
    bytes: Family<CauseLabels, Counter>,
}

impl DiskWrites {
    /// Registers the series in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            Descriptor::new(
                "kelp_store_disk_written_bytes",
                "Bytes the datastore's writer had written to disk, by cause: the resource a commit wrote, checkpoint, freeing_space or compaction",
            ),
            self.bytes.clone(),
        );
    }

    /// Runs `f` on the writer thread and charges what it wrote to `causes`
    /// (cause → writes), in proportion.
    pub fn measure<T>(&self, causes: &BTreeMap<String, u64>, f: impl FnOnce() -> T) -> T {
        let before = thread_written();
        let result = f();
        if let (Some(before), Some(after)) = (before, thread_written()) {
            for (cause, bytes) in split(after.saturating_sub(before), causes) {
                self.bytes
                    .get_or_create(&CauseLabels { cause })
                    .inc_by(bytes);
            }
        }
        result
    }

    /// [`DiskWrites::measure`] with one cause.
    pub fn measure_as<T>(&self, cause: &str, f: impl FnOnce() -> T) -> T {
        self.measure(&BTreeMap::from([(cause.to_string(), 1)]), f)
    }
}

/// The resource a store key belongs to (`/registry/<group>/<resource>/…`).
pub fn cause_of(key: &str) -> &str {
    key.split('/')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or("other")
}

/// `bytes` split among `causes` by their writes; the rounding's remainder
/// goes to the cause with the most, so the parts add up to `bytes`.
fn split(bytes: u64, causes: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let writes: u64 = causes.values().sum();
    if bytes == 0 || writes == 0 {
        return Vec::new();
    }
    let mut parts: Vec<(String, u64)> = causes
        .iter()
        .map(|(cause, n)| (cause.clone(), bytes * n / writes))
        .collect();
    let rest = bytes - parts.iter().map(|(_, b)| b).sum::<u64>();
    if let Some(largest) = parts.iter_mut().max_by_key(|(cause, _)| causes[cause]) {
        largest.1 += rest;
    }
    parts
}

/// Bytes the calling thread has had written to storage so far (None
/// where the kernel does not count per thread). The file stays open per
/// thread and is read into a buffer on the stack: this runs around every
/// commit on the writer's path.
fn thread_written() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    thread_local! {
        static IO: Option<std::fs::File> = std::fs::File::open("/proc/thread-self/io").ok();
    }
    IO.with(|file| {
        let mut buf = [0u8; 512];
        let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        write_bytes(std::str::from_utf8(&buf[..n]).ok()?)
    })
}

/// The `write_bytes` figure of a `/proc/…/io` text.
fn write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commits_bytes_are_shared_by_its_writes_and_add_up() {
        let causes = BTreeMap::from([("leases".to_string(), 2), ("nodes".to_string(), 1)]);
        let parts = split(4097, &causes);
        assert_eq!(parts.iter().map(|(_, b)| b).sum::<u64>(), 4097);
        assert_eq!(
            parts,
            vec![("leases".to_string(), 2732), ("nodes".to_string(), 1365)]
        );
        assert!(split(0, &causes).is_empty());
        assert!(split(10, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn causes_are_the_resources_of_store_keys() {
        assert_eq!(
            cause_of("/registry/coordination.k8s.io/leases/kube-node-lease/n"),
            "leases"
        );
        assert_eq!(cause_of("/registry/core/nodes/n"), "nodes");
        assert_eq!(cause_of("/registry/core/events/ns/e"), "events");
        assert_eq!(cause_of("/elsewhere"), "other");
    }

    #[test]
    fn the_writer_threads_bytes_are_measured() {
        assert!(thread_written().is_some(), "no /proc/thread-self/io");
        let writes = DiskWrites::default();
        // On the disk the build is on (a tmpfs write is no disk write).
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = tempfile::tempdir_in(target).unwrap();
        writes.measure_as(CHECKPOINT, || {
            use std::io::Write;
            let mut file = std::fs::File::create(dir.path().join("f")).unwrap();
            file.write_all(&[1u8; 64 * 1024]).unwrap();
        });
        let charged = |cause: &str| {
            writes
                .bytes
                .get_or_create(&CauseLabels {
                    cause: cause.into(),
                })
                .get()
        };
        assert!(charged(CHECKPOINT) >= 64 * 1024, "{}", charged(CHECKPOINT));
        assert_eq!(charged(COMPACTION), 0);
    }
}
