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
//! waiting, writes them with one `write`, calls `fdatasync` once, applies them to the store in
//! log order (only now do readers see them), then completes each record's [`Ack`] (group commit:
//! under load one sync covers many writes). When a segment passes `snapshot_after_bytes` it
//! starts the next one and a background thread writes a snapshot.
//!
//! The queue is bounded in bytes (`queue_bytes`): a writer takes room before it takes the
//! store's shard lock and the writer thread gives it back once the record is applied, so writers
//! wait while the disk is behind and the writer thread never waits for anyone.
//!
//! A failed write or sync applies nothing of its group, cuts the segment back to its last
//! synced length (best effort), answers those writes with the error and turns the log read-only:
//! every later write is refused naming the failure, as databases do after an fsync failure, since
//! what the kernel kept of the failed pages is unknown. Reads go on; a restart recovers.
//!
//! On open: the newest complete snapshot is loaded and later segments are replayed in order. A
//! torn tail of the last segment (a crash in the middle of a write: a partial record, trailing
//! zeros, nothing intact after it) is cut, with a warning that says where and how much. A bad
//! record with an intact one anywhere after it, or in any other segment, is corruption: the node
//! refuses to start, naming the file and offset, unless `repair` is set, which cuts the log at
//! the first bad record and says loudly what it dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread;

use crossbeam::channel::{self, Receiver, Sender};
use sandstorm_naming::TenantId;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

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

impl LogOp<'_> {
    fn encoded_len(&self) -> usize {
        let (key, value) = match *self {
            LogOp::Put { key, value, .. } => (key, value),
            LogOp::Delete { key, .. } => (key, &[][..]),
        };
        HEADER + 9 + key.len() + value.len()
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
    // The cheap test first: the search for intact records after a bad one calls this at every
    // offset.
    if !matches!(payload.first(), Some(&(OP_PUT | OP_DELETE | OP_END))) {
        return None;
    }
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
    /// Bytes of records queued and not yet applied before writers wait (default 64 MiB; a
    /// record larger than this waits for an empty queue).
    pub queue_bytes: u64,
    /// Cut the log at its first bad record, dropping everything after it, instead of refusing
    /// to start (`--repair-log`).
    pub repair: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            snapshot_after_bytes: 64 << 20,
            queue_bytes: 64 << 20,
            repair: false,
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
    /// Bytes cut from a torn tail of the last segment.
    pub tail_bytes_cut: u64,
    /// What `repair` dropped: the first bad record's file and offset, and the bytes from
    /// there to the end of the log.
    pub repaired: Option<(PathBuf, u64, u64)>,
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// an I/O call failed on a path
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// a record that is not the log's tail is corrupt
    #[error(
        "{path}: corrupt record at byte {offset}, with intact records after it; refusing to \
         start without them. `sandstorm agent --role storage --repair-log` cuts the log there, \
         dropping that record and everything after it"
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
    shared: Arc<Shared>,
}

/// What writers and the writer thread share.
#[derive(Debug)]
struct Shared {
    /// Why the log refuses writes: the first failed write or sync.
    failure: OnceLock<String>,
    /// Bytes queued and not yet applied; writers wait on `room_freed` while it is full.
    queued: Mutex<u64>,
    room_freed: Condvar,
    queue_bytes: u64,
    /// Test hooks: fail the next sync; hold the writer before it writes.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    hold: Mutex<()>,
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
        // Writers waiting for room learn of it.
        let _queued = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        self.room_freed.notify_all();
    }
}

/// Room in the log's queue for one record, given back when it is dropped.
#[derive(Debug)]
pub struct Room {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut queued = self.shared.queued.lock().unwrap_or_else(|e| e.into_inner());
        *queued -= self.bytes;
        self.shared.room_freed.notify_all();
    }
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    /// What the store charged the tenant for it, taken back if it fails.
    charge: (i64, i64),
    ack: oneshot::Sender<Result<(), String>>,
    /// Given back when this is dropped: after the record was applied and answered.
    _room: Room,
}

impl Wal {
    /// Waits for room in the queue for `op` (while the disk is behind); an error if the log
    /// refuses writes.
    pub fn reserve(&self, op: &LogOp<'_>) -> Result<Room, String> {
        let bytes = (op.encoded_len() as u64).min(self.shared.queue_bytes);
        let mut queued = self.shared.queued.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(reason) = self.shared.failure.get() {
                return Err(reason.clone());
            }
            if *queued + bytes <= self.shared.queue_bytes {
                break;
            }
            #[cfg(test)]
            self.shared
                .waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            queued = self
                .shared
                .room_freed
                .wait(queued)
                .unwrap_or_else(|e| e.into_inner());
            #[cfg(test)]
            self.shared
                .waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        *queued += bytes;
        Ok(Room {
            shared: self.shared.clone(),
            bytes,
        })
    }

    /// Queues `op` for the next group commit, in the room `reserve` gave it; `charge` is what
    /// the store charged its tenant.
    pub fn append(&self, op: LogOp<'_>, room: Room, charge: (i64, i64)) -> Result<Ack, String> {
        if let Some(reason) = self.shared.failure.get() {
            return Err(reason.clone());
        }
        let mut bytes = Vec::with_capacity(op.encoded_len());
        op.encode_into(&mut bytes);
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                bytes,
                charge,
                ack,
                _room: room,
            })
            .map_err(|_| "the log writer has stopped".to_owned())?;
        Ok(rx)
    }

    /// Why the log refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.get().cloned()
    }

    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) {
        self.shared
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writers waiting for room in the queue.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.shared
            .waiting
            .load(std::sync::atomic::Ordering::SeqCst)
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
    let mut last = segments.last().copied().unwrap_or(base);
    for &n in &segments {
        let path = segment_path(dir, n);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let mut at = 0;
        while at < bytes.len() {
            if let Some((Record::Op(op), len)) = decode(&bytes[at..]) {
                store.apply_recovered(op);
                recovery.records_replayed += 1;
                at += len;
                continue;
            }
            let torn = n == last && intact_after(&bytes, at).is_none();
            if !torn && !options.repair {
                return Err(OpenError::Corrupt {
                    path,
                    offset: at as u64,
                });
            }
            let cut = (bytes.len() - at) as u64;
            if torn {
                warn!(
                    path = %path.display(),
                    offset = at,
                    bytes_cut = cut,
                    "the log ends in a torn record (a crash mid-write); cutting it at the last good record"
                );
                recovery.tail_bytes_cut = cut;
            } else {
                let later: Vec<u64> = segments.iter().copied().filter(|&m| m > n).collect();
                let mut dropped = cut;
                for &m in &later {
                    let later_path = segment_path(dir, m);
                    dropped += fs::metadata(&later_path).map_err(io_at(&later_path))?.len();
                    fs::remove_file(&later_path).map_err(io_at(&later_path))?;
                }
                error!(
                    path = %path.display(),
                    offset = at,
                    bytes_dropped = dropped,
                    later_segments_removed = later.len(),
                    "--repair-log: the log has a corrupt record; cutting it there and DROPPING \
                     every record after it, acknowledged writes included"
                );
                recovery.repaired = Some((path.clone(), at as u64, dropped));
                last = n;
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_at(&path))?;
            file.set_len(at as u64).map_err(io_at(&path))?;
            file.sync_all().map_err(io_at(&path))?;
            break;
        }
        if n == last && recovery.repaired.is_some() {
            break;
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

    // Unbounded as a channel; `Shared::queued` bounds it.
    let (tx, rx) = channel::unbounded();
    let shared = Arc::new(Shared {
        failure: OnceLock::new(),
        queued: Mutex::new(0),
        room_freed: Condvar::new(),
        queue_bytes: options.queue_bytes.max(1),
        #[cfg(test)]
        fail_next: std::sync::atomic::AtomicBool::new(false),
        #[cfg(test)]
        hold: Mutex::new(()),
        #[cfg(test)]
        waiting: std::sync::atomic::AtomicUsize::new(0),
    });
    let shared_store = Arc::new(OnceLock::new());
    let writer = Writer {
        dir: dir.to_path_buf(),
        file,
        segment: last,
        size,
        options,
        shared: shared.clone(),
        store: shared_store.clone(),
        snapshotting: Arc::new(Mutex::new(())),
    };
    thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(&rx))
        .map_err(io_at(dir))?;
    let _ = shared_store.set(Arc::downgrade(&store));
    store.attach_wal(Wal { tx, shared });
    info!(
        dir = %dir.display(),
        records_replayed = recovery.records_replayed,
        snapshot = ?recovery.snapshot,
        "data directory recovered"
    );
    Ok((store, recovery))
}

/// Where the first intact record after the bad one at `at` starts, if any: with none, the bad
/// record is a torn tail; with one, it is corruption.
fn intact_after(bytes: &[u8], at: usize) -> Option<usize> {
    (at + 1..bytes.len()).find(|&i| decode(&bytes[i..]).is_some())
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
    shared: Arc<Shared>,
    store: Arc<OnceLock<Weak<Store>>>,
    /// Held while a snapshot is written; a rotation that finds it held skips its snapshot.
    snapshotting: Arc<Mutex<()>>,
}

/// Most bytes one group commit gathers before it syncs.
const GROUP_BYTES: usize = 4 << 20;

impl Writer {
    fn run(mut self, rx: &Receiver<Pending>) {
        let mut buf = Vec::with_capacity(64 << 10);
        let mut group = Vec::new();
        while let Ok(first) = rx.recv() {
            buf.clear();
            buf.extend_from_slice(&first.bytes);
            group.push(first);
            while buf.len() < GROUP_BYTES {
                let Ok(next) = rx.try_recv() else { break };
                buf.extend_from_slice(&next.bytes);
                group.push(next);
            }
            #[cfg(test)]
            let held = self.shared.hold.lock();
            #[cfg(test)]
            drop(held);
            let store = self.store.get().and_then(Weak::upgrade);
            let result = match self.shared.failure.get() {
                Some(reason) => Err(reason.clone()),
                None => self.write(&buf),
            };
            let reply = match result {
                Ok(()) => {
                    self.size += buf.len() as u64;
                    if let Some(store) = &store {
                        for p in &group {
                            if let Some((Record::Op(op), _)) = decode(&p.bytes) {
                                store.apply_durable(op);
                            }
                        }
                    }
                    Ok(())
                }
                Err(reason) => {
                    if let Some(store) = &store {
                        for p in &group {
                            if let Some((Record::Op(op), _)) = decode(&p.bytes) {
                                store.abandon(op, p.charge);
                            }
                        }
                    }
                    Err(reason)
                }
            };
            for p in group.drain(..) {
                // A writer that stopped waiting is not an error.
                let _ = p.ack.send(reply.clone());
            }
            if reply.is_ok()
                && self.size >= self.options.snapshot_after_bytes
                && let Err(e) = self.rotate()
            {
                warn!(error = %e, "could not start a new log segment; continuing in the old one");
            }
        }
    }

    /// Writes and syncs one group. On failure the log turns read-only: the reason, naming the
    /// segment and the call that failed.
    fn write(&mut self, buf: &[u8]) -> Result<(), String> {
        let path = segment_path(&self.dir, self.segment);
        let result = self
            .file
            .write_all(buf)
            .map_err(|e| ("write", e))
            .and_then(|()| self.sync().map_err(|e| ("fdatasync", e)));
        let Err((call, e)) = result else {
            return Ok(());
        };
        let reason = format!(
            "{call} of the write-ahead log {} failed ({e}); the node refuses writes until it is \
             restarted",
            path.display()
        );
        error!(%reason, "the storage node is now read-only");
        // What the kernel kept of the failed pages is unknown; the failed writes must not come
        // back on restart, so cut them off if the file still lets us.
        let _ = self.file.set_len(self.size);
        self.shared.fail(reason.clone());
        Err(reason)
    }

    fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if self
            .shared
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        self.file.sync_data()
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

    const T: TenantId = TenantId(1);

    fn segment(dir: &Path) -> PathBuf {
        let n = numbered(dir, "wal-", ".log").unwrap();
        segment_path(dir, *n.last().unwrap())
    }

    #[test]
    fn a_write_is_visible_only_once_durable_and_counted_while_in_flight() {
        use crate::storage::store::{Allowance, StoreError, TenantUsage};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), Limits::default(), WalOptions::default()).unwrap();
        durable(store.put(T, b"old", b"1").unwrap());
        // 3 + 1 held; room for one more key of 2 + 2.
        store.set_allowance(
            T,
            Allowance {
                max_bytes: 8,
                max_keys: 10,
                quota_bytes: 0,
                quota_keys: 0,
            },
        );
        let held = store.hold_log_writer();
        let new = store.put(T, b"k1", b"v1").unwrap().unwrap();
        let replaced = store.put(T, b"old", b"2").unwrap().unwrap();
        // Not on disk yet: no reader sees either write.
        assert_eq!(store.get(T, b"k1").unwrap(), None);
        assert_eq!(store.get(T, b"old").unwrap().as_deref(), Some(&b"1"[..]));
        // Yet the tenant is charged for what is in flight, and growth past it is refused.
        assert_eq!(
            store.tenant_usage(),
            [TenantUsage {
                tenant: T,
                keys: 2,
                bytes: 8
            }]
        );
        assert!(matches!(
            store.put(T, b"k2", b""),
            Err(StoreError::OverQuota { held: 8, .. })
        ));
        // A delete sees the key written in flight.
        let (existed, deleted) = store.delete(T, b"k1").unwrap();
        assert!(existed);
        drop(held);
        for ack in [new, replaced, deleted.unwrap()] {
            ack.blocking_recv().unwrap().unwrap();
        }
        // Acknowledged: visible, in log order.
        assert_eq!(store.get(T, b"k1").unwrap(), None);
        assert_eq!(store.get(T, b"old").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.size(), (1, 4));
        assert_eq!(store.tenant_usage()[0].bytes, 4);
    }

    #[test]
    fn a_failed_sync_makes_the_store_read_only_and_the_write_is_gone() {
        use crate::storage::store::StoreError;
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = open(dir.path(), Limits::default(), WalOptions::default()).unwrap();
            durable(store.put(T, b"kept", b"1").unwrap());
            assert_eq!(store.read_only(), None);
            store.fail_next_sync();
            let ack = store.put(T, b"lost", b"2").unwrap().unwrap();
            let err = ack.blocking_recv().unwrap().unwrap_err();
            assert!(err.contains("fdatasync of the write-ahead log"), "{err}");
            assert!(err.contains("injected fdatasync failure"), "{err}");
            // The failed write is not visible, nor charged.
            assert_eq!(store.get(T, b"lost").unwrap(), None);
            assert_eq!(store.tenant_usage()[0].keys, 1);
            // Every later write is refused, naming the failure; reads go on.
            let refused = store.put(T, b"later", b"3").unwrap_err();
            assert_eq!(refused, StoreError::ReadOnly(err.clone()));
            assert!(matches!(
                store.delete(T, b"kept"),
                Err(StoreError::ReadOnly(_))
            ));
            assert_eq!(store.get(T, b"kept").unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(store.read_only(), Some(err));
        }
        // What the writer was told failed does not come back on restart.
        let (store, _) = open(dir.path(), Limits::default(), WalOptions::default()).unwrap();
        assert_eq!(store.get(T, b"kept").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get(T, b"lost").unwrap(), None);
        assert_eq!(store.read_only(), None);
    }

    /// Three acknowledged records of 21 bytes each (at 0, 21 and 42).
    fn three_records(dir: &Path) -> PathBuf {
        let (store, _) = open(dir, Limits::default(), WalOptions::default()).unwrap();
        for k in [b"k1", b"k2", b"k3"] {
            durable(store.put(T, k, b"vv").unwrap());
        }
        segment(dir)
    }

    fn keys(store: &Store) -> Vec<Vec<u8>> {
        store
            .scan(T, b"", 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_bad_record_before_the_end_refuses_start_unless_repair_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 63);
        bytes[21 + HEADER + 3] ^= 0x01; // the second record's payload
        fs::write(&path, &bytes).unwrap();
        let err = open(dir.path(), Limits::default(), WalOptions::default()).unwrap_err();
        assert!(
            matches!(&err, OpenError::Corrupt { path: p, offset: 21 } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains("--repair-log"), "{err}");
        // Refusing changed nothing.
        assert_eq!(fs::read(&path).unwrap(), bytes);
        let repair = WalOptions {
            repair: true,
            ..WalOptions::default()
        };
        let (store, recovery) = open(dir.path(), Limits::default(), repair).unwrap();
        assert_eq!(recovery.repaired, Some((path.clone(), 21, 42)));
        assert_eq!(keys(&store), [b"k1".to_vec()]);
        // The repaired log takes writes and reopens cleanly.
        durable(store.put(T, b"k4", b"vv").unwrap());
        drop(store);
        let (store, recovery) = open(dir.path(), Limits::default(), WalOptions::default()).unwrap();
        assert_eq!(recovery.tail_bytes_cut, 0);
        assert_eq!(keys(&store), [b"k1".to_vec(), b"k4".to_vec()]);
    }

    #[test]
    fn a_damaged_length_with_records_after_it_is_corruption_not_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        // The second record now claims to run past the end of the file.
        bytes[21..25].copy_from_slice(&1000u32.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = open(dir.path(), Limits::default(), WalOptions::default()).unwrap_err();
        assert!(
            matches!(err, OpenError::Corrupt { offset: 21, .. }),
            "{err}"
        );
    }

    #[test]
    fn torn_tails_are_cut_and_everything_before_them_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_records(dir.path());
        let whole = fs::read(&path).unwrap();
        // A record cut short, a partial header, trailing zeros, a last record with a bad
        // checksum: nothing intact follows any of them.
        let mut bad_last = whole.clone();
        bad_last[62] ^= 0x01;
        let cases: [(Vec<u8>, u64, usize); 4] = [
            (whole[..60].to_vec(), 18, 2),
            ([&whole[..], &[5, 0, 0]].concat(), 3, 3),
            ([&whole[..], &[0; 100]].concat(), 100, 3),
            (bad_last, 21, 2),
        ];
        for (i, (bytes, cut, kept)) in cases.into_iter().enumerate() {
            fs::write(&path, &bytes).unwrap();
            let (store, recovery) =
                open(dir.path(), Limits::default(), WalOptions::default()).unwrap();
            assert_eq!(recovery.tail_bytes_cut, cut, "case {i}");
            assert_eq!(keys(&store).len(), kept, "case {i}");
            drop(store);
            fs::write(&path, &whole).unwrap();
        }
    }

    #[test]
    fn writers_wait_while_the_queue_is_full_and_nothing_deadlocks() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two 21-byte records.
        let options = WalOptions {
            queue_bytes: 42,
            ..WalOptions::default()
        };
        let (store, _) = open(dir.path(), Limits::default(), options).unwrap();
        let held = store.hold_log_writer();
        let acks = vec![
            store.put(T, b"k1", b"vv").unwrap().unwrap(),
            store.put(T, b"k2", b"vv").unwrap().unwrap(),
        ];
        let third = {
            let store = store.clone();
            thread::spawn(move || store.put(T, b"k3", b"vv").unwrap().unwrap())
        };
        while store.log_writers_waiting() == 0 {
            thread::yield_now();
        }
        assert!(!third.is_finished());
        assert_eq!(store.get(T, b"k1").unwrap(), None);
        drop(held);
        let third = third.join().unwrap();
        for ack in acks.into_iter().chain([third]) {
            ack.blocking_recv().unwrap().unwrap();
        }
        assert_eq!(keys(&store).len(), 3);
    }
}
