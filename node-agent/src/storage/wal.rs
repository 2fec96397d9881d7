//! Durability for the storage node: a checksummed write-ahead log with group commit, and
//! snapshots that let old log segments go.
//!
//! Files in the data directory:
//! - `wal-<n>.log`: segments of records `[u32 len][u32 crc32(payload)][payload]`, little-endian;
//!   a payload is `[u8 op][u32 tenant][u32 key_len][key][value]` (op 1 = put, 2 = delete).
//! - `snapshot-<n>.snap`: every pair as put records, then an end record carrying the count; it
//!   holds everything logged before segment `n` (and perhaps some of `n`: replaying puts and
//!   deletes in log order over it gives the same map, since they are blind writes).
//!
//! One writer thread owns the open segment. Writers send it encoded records; it takes every record
//! waiting, writes them with one `write`, calls `fdatasync` once, then completes each record's
//! [`Ack`] (group commit: under load one sync covers many writes). When a segment passes
//! `snapshot_after_bytes` it starts the next one and a background thread writes a snapshot.
//!
//! On open: the newest complete snapshot is loaded, later segments are replayed in order, and a
//! torn or corrupt tail of the last segment (a crash in the middle of a write) is cut at the last
//! good record, with a warning that says where and how much. Corruption anywhere else is an error
//! that names the file and offset: the node refuses to start rather than serve lost data quietly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;

use crossbeam::channel::{self, Receiver, Sender};
use sandstorm_naming::TenantId;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::store::{Limits, Store};

/// Completes when the write it belongs to is on disk (or the log failed).
pub type Ack = oneshot::Receiver<Result<(), String>>;

/// One logged operation, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOp<'a> {
    /// `key` now holds `value`.
    Put {
        tenant: TenantId,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// `key` was removed.
    Delete { tenant: TenantId, key: &'a [u8] },
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_END: u8 = 3;
const HEADER: usize = 8;
/// No record is larger than this (a 1 MiB value limit plus slack; raises with the limits).
const MAX_RECORD: usize = 1 << 30;

impl LogOp<'_> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let (op, tenant, key, value): (u8, TenantId, &[u8], &[u8]) = match *self {
            LogOp::Put { tenant, key, value } => (OP_PUT, tenant, key, value),
            LogOp::Delete { tenant, key } => (OP_DELETE, tenant, key, &[]),
        };
        let payload_len = 1 + 4 + 4 + key.len() + value.len();
        let start = out.len();
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(op);
        out.extend_from_slice(&tenant.0.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        let crc = crc32fast::hash(&out[start + HEADER..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

fn encode_end(count: u64, out: &mut Vec<u8>) {
    let payload = [&[OP_END][..], &count.to_le_bytes()].concat();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
enum Record<'a> {
    Op(LogOp<'a>),
    End(u64),
}

/// Decodes the record at the start of `bytes`: the record and its length, or `None` if what is
/// there is not a whole, intact record.
fn decode(bytes: &[u8]) -> Option<(Record<'_>, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(HEADER..HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let u32_at = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let record = match *payload.first()? {
        OP_END => Record::End(u64::from_le_bytes(payload.get(1..9)?.try_into().ok()?)),
        op @ (OP_PUT | OP_DELETE) => {
            let tenant = TenantId(u32_at(1)?);
            let key_len = u32_at(5)? as usize;
            let key = payload.get(9..9 + key_len)?;
            let value = payload.get(9 + key_len..)?;
            if op == OP_PUT {
                Record::Op(LogOp::Put { tenant, key, value })
            } else {
                Record::Op(LogOp::Delete { tenant, key })
            }
        }
        _ => return None,
    };
    Some((record, HEADER + len))
}

/// How the log behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment this large is closed and a snapshot taken (default 64 MiB).
    pub snapshot_after_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            snapshot_after_bytes: 64 << 20,
        }
    }
}

/// What opening a data directory found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot loaded, if any.
    pub snapshot: Option<PathBuf>,
    /// Records replayed from log segments.
    pub records_replayed: u64,
    /// Bytes cut from a torn or corrupt tail of the last segment.
    pub tail_bytes_cut: u64,
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// an I/O call failed on a path
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// a record that is not the log's tail is corrupt
    #[error(
        "{path}: corrupt record at byte {offset} before the end of the log; refusing to start \
         without it (move the file away to start from what precedes it)"
    )]
    Corrupt { path: PathBuf, offset: u64 },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The handle writers use: sends records to the writer thread.
#[derive(Debug)]
pub struct Wal {
    tx: Sender<Pending>,
    failed: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    ack: oneshot::Sender<Result<(), String>>,
}

impl Wal {
    /// Queues `op` for the next group commit.
    pub fn append(&self, op: LogOp<'_>) -> io::Result<Ack> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other(
                "an earlier write to the log failed; writes are refused",
            ));
        }
        let mut bytes = Vec::new();
        op.encode_into(&mut bytes);
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Pending { bytes, ack })
            .map_err(|_| io::Error::other("the log writer has stopped"))?;
        Ok(rx)
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016}.log"))
}

fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:016}.snap"))
}

/// Numbers of the files named `<prefix><n><suffix>` in `dir`, ascending.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<u64>, OpenError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            && let Ok(n) = n.parse()
        {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Loads a snapshot into `store`; `false` if it is incomplete (no intact end record).
fn load_snapshot(path: &Path, store: &Store) -> Result<bool, OpenError> {
    let bytes = fs::read(path).map_err(io_at(path))?;
    let mut at = 0;
    let mut ops = Vec::new();
    while let Some((record, len)) = decode(&bytes[at..]) {
        at += len;
        match record {
            Record::Op(op) => ops.push(op),
            Record::End(count) => {
                if count != ops.len() as u64 || at != bytes.len() {
                    return Ok(false);
                }
                for op in &ops {
                    store.apply_recovered(*op);
                }
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Opens (or creates) a data directory: recovers its contents into a new store and starts the
/// log writer, so every later write to the store is durable once its [`Ack`] completes.
pub fn open(
    dir: &Path,
    limits: Limits,
    options: WalOptions,
) -> Result<(Arc<Store>, Recovery), OpenError> {
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let store = Arc::new(Store::new(limits));
    let mut recovery = Recovery::default();

    // The newest complete snapshot; an incomplete one (a crash while writing it) is ignored.
    let mut base = 0;
    for n in numbered(dir, "snapshot-", ".snap")?.into_iter().rev() {
        let path = snapshot_path(dir, n);
        if load_snapshot(&path, &store)? {
            base = n;
            recovery.snapshot = Some(path);
            break;
        }
        warn!(path = %path.display(), "ignoring an incomplete snapshot");
    }

    let segments: Vec<u64> = numbered(dir, "wal-", ".log")?
        .into_iter()
        .filter(|&n| n >= base)
        .collect();
    let last = segments.last().copied().unwrap_or(base);
    for &n in &segments {
        let path = segment_path(dir, n);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let mut at = 0;
        while at < bytes.len() {
            match decode(&bytes[at..]) {
                Some((Record::Op(op), len)) => {
                    store.apply_recovered(op);
                    recovery.records_replayed += 1;
                    at += len;
                }
                _ if n == last => {
                    let cut = (bytes.len() - at) as u64;
                    warn!(
                        path = %path.display(),
                        offset = at,
                        bytes_cut = cut,
                        "the log ends in a torn or corrupt record (a crash mid-write); cutting it at the last good record"
                    );
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_at(&path))?;
                    file.set_len(at as u64).map_err(io_at(&path))?;
                    file.sync_all().map_err(io_at(&path))?;
                    recovery.tail_bytes_cut = cut;
                    break;
                }
                _ => {
                    return Err(OpenError::Corrupt {
                        path,
                        offset: at as u64,
                    });
                }
            }
        }
    }

    // What the snapshot made redundant, and leftovers of an interrupted snapshot.
    remove_older(dir, base).map_err(io_at(dir))?;

    let path = segment_path(dir, last);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_at(&path))?;
    let size = file.metadata().map_err(io_at(&path))?.len();
    sync_dir(dir).map_err(io_at(dir))?;

    let (tx, rx) = channel::unbounded();
    let failed = Arc::new(AtomicBool::new(false));
    let shared_store = Arc::new(OnceLock::new());
    let writer = Writer {
        dir: dir.to_path_buf(),
        file,
        segment: last,
        size,
        options,
        failed: failed.clone(),
        store: shared_store.clone(),
        snapshotting: Arc::new(Mutex::new(())),
    };
    thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(&rx))
        .map_err(io_at(dir))?;
    let _ = shared_store.set(Arc::downgrade(&store));
    store.attach_wal(Wal { tx, failed });
    info!(
        dir = %dir.display(),
        records_replayed = recovery.records_replayed,
        snapshot = ?recovery.snapshot,
        "data directory recovered"
    );
    Ok((store, recovery))
}

fn remove_older(dir: &Path, base: u64) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let older = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n < base)
        };
        if name.ends_with(".tmp") || older("wal-", ".log") || older("snapshot-", ".snap") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    size: u64,
    options: WalOptions,
    failed: Arc<AtomicBool>,
    store: Arc<OnceLock<Weak<Store>>>,
    /// Held while a snapshot is written; a rotation that finds it held skips its snapshot.
    snapshotting: Arc<Mutex<()>>,
}

/// Most bytes one group commit gathers before it syncs.
const GROUP_BYTES: usize = 4 << 20;

impl Writer {
    fn run(mut self, rx: &Receiver<Pending>) {
        let mut buf = Vec::with_capacity(64 << 10);
        let mut acks = Vec::new();
        while let Ok(first) = rx.recv() {
            buf.clear();
            buf.extend_from_slice(&first.bytes);
            acks.push(first.ack);
            while buf.len() < GROUP_BYTES {
                let Ok(next) = rx.try_recv() else { break };
                buf.extend_from_slice(&next.bytes);
                acks.push(next.ack);
            }
            let result = self
                .file
                .write_all(&buf)
                .and_then(|()| self.file.sync_data());
            let reply = match result {
                Ok(()) => Ok(()),
                Err(e) => {
                    warn!(error = %e, "write-ahead log write failed; refusing further writes");
                    self.failed.store(true, Ordering::Relaxed);
                    Err(format!("write-ahead log: {e}"))
                }
            };
            for ack in acks.drain(..) {
                // A writer that stopped waiting is not an error.
                let _ = ack.send(reply.clone());
            }
            self.size += buf.len() as u64;
            if reply.is_ok()
                && self.size >= self.options.snapshot_after_bytes
                && let Err(e) = self.rotate()
            {
                warn!(error = %e, "could not start a new log segment; continuing in the old one");
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.segment + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&self.dir, next))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.segment = next;
        self.size = 0;
        let Some(store) = self.store.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let dir = self.dir.clone();
        let lock = self.snapshotting.clone();
        thread::Builder::new()
            .name("wal-snapshot".into())
            .spawn(move || {
                let Ok(_held) = lock.try_lock() else { return };
                match write_snapshot(&dir, next, &store) {
                    Ok(count) => info!(
                        segment = next,
                        pairs = count,
                        "snapshot written; older segments removed"
                    ),
                    Err(e) => warn!(error = %e, "snapshot failed; the log keeps everything"),
                }
            })?;
        Ok(())
    }
}

/// Writes `snapshot-<n>` from the store's current contents, then removes what it supersedes.
fn write_snapshot(dir: &Path, n: u64, store: &Store) -> io::Result<u64> {
    let final_path = snapshot_path(dir, n);
    let tmp = final_path.with_extension("snap.tmp");
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    let mut record = Vec::new();
    let mut count = 0u64;
    let mut result = Ok(());
    store.for_each(|tenant, key, value| {
        if result.is_err() {
            return;
        }
        record.clear();
        LogOp::Put { tenant, key, value }.encode_into(&mut record);
        result = out.write_all(&record);
        count += 1;
    });
    result?;
    record.clear();
    encode_end(count, &mut record);
    out.write_all(&record)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)?;
    remove_older(dir, n)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let op = LogOp::Put {
            tenant: TenantId(7),
            key: b"key",
            value: b"value",
        };
        let mut bytes = Vec::new();
        op.encode_into(&mut bytes);
        // 8 header + 1 op + 4 tenant + 4 key length + 3 key + 5 value.
        assert_eq!(bytes.len(), 25);
        assert_eq!(decode(&bytes), Some((Record::Op(op), 25)));
        // Torn: any prefix is not a record.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "prefix of {cut} bytes");
        }
        // Corrupt: any flipped payload byte fails the checksum.
        for i in HEADER..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert_eq!(decode(&damaged), None, "flip at {i}");
        }
    }

    /// Waits for a write's acknowledgement.
    fn durable(ack: Option<Ack>) {
        let ack = ack.expect("a durable store acknowledges");
        ack.blocking_recv().unwrap().unwrap();
    }

    #[test]
    fn tenant_usage_is_rebuilt_on_open_and_still_bounds_writes() {
        use crate::storage::store::{Allowance, TenantUsage};
        let dir = tempfile::tempdir().unwrap();
        // Snapshots load through the same path as the log (`apply_recovered`); the log alone
        // is replayed here so the test does not race the background snapshot thread.
        let options = WalOptions::default();
        let (a, b) = (TenantId(1), TenantId(2));
        let before = {
            let (store, _) = open(dir.path(), Limits::default(), options).unwrap();
            for i in 0..300u32 {
                durable(
                    store
                        .put(a, format!("k{:03}", i % 120).as_bytes(), b"value")
                        .unwrap(),
                );
            }
            for i in 0..40u32 {
                durable(store.delete(a, format!("k{i:03}").as_bytes()).unwrap().1);
            }
            durable(store.put(b, b"only", b"1").unwrap());
            store.tenant_usage()
        };
        // 80 keys of 4 + 5 bytes; 1 key of 4 + 1.
        assert_eq!(
            before,
            [
                TenantUsage {
                    tenant: a,
                    keys: 80,
                    bytes: 720
                },
                TenantUsage {
                    tenant: b,
                    keys: 1,
                    bytes: 5
                }
            ]
        );
        let (store, recovery) = open(dir.path(), Limits::default(), options).unwrap();
        assert_eq!(recovery.records_replayed, 341);
        assert_eq!(store.tenant_usage(), before);
        // The recovered usage is what a new allowance is checked against: 720 + 9 > 725.
        store.set_allowance(
            a,
            Allowance {
                max_bytes: 725,
                max_keys: 1000,
                quota_bytes: 0,
                quota_keys: 0,
            },
        );
        assert!(matches!(
            store.put(a, b"k999", b"value"),
            Err(crate::storage::store::StoreError::OverQuota { held: 720, .. })
        ));
    }
}
