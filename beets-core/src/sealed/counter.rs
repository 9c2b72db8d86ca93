//! Counter allocation and persistence (spec §12 "counter"), and persistence of the replay
//! window.
//!
//! A counter value MUST never be used twice with one key, transport and source id: CCM with a
//! repeated nonce leaks the XOR of two plaintexts and weakens the MIC. A node therefore keeps a
//! persisted bound B above every counter it has used: when the next counter reaches B it persists
//! B + [`RESERVATION_BLOCK`] (1024) **before** using it, and on start it continues at B. A crash
//! loses at most the 1024 counters of the current block; it never reuses one. The last counter is
//! 2³² − 1; after it [`CounterAllocator::next`] refuses with [`CounterError::Exhausted`], which
//! says to re-key.
//!
//! File formats: see [`FileCounterStore`].

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};

use super::key::KeyId;
use super::window::{ReplayWindow, WindowEntry};
use crate::node::Transport;

/// Counters reserved per persisted bound: 1024 (spec §12).
pub const RESERVATION_BLOCK: u64 = 1024;
/// One past the last counter a node uses with a key: 2³² (the last is 2³² − 1).
pub const COUNTER_LIMIT: u64 = 1 << 32;

/// One counter sequence: per (K, transport, source id), spec §12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterStream {
    /// The key's id ([`SealKey::id`](super::SealKey::id)).
    pub key_id: KeyId,
    /// The transport.
    pub transport: Transport,
    /// The node's source id for this key.
    pub source_id: NonZeroU16,
}

/// Durable storage for counter bounds and replay windows.
///
/// Implementations MUST make [`save_bound`](Self::save_bound) durable before returning `Ok`
/// (the allocator uses the reserved counters right after); a bound that goes backwards after a
/// crash reuses counters.
pub trait CounterStore {
    /// The persisted bound B of `stream`, `None` if none was ever saved (start at 0).
    ///
    /// # Errors
    /// [`StoreError`] when the bound cannot be read or does not parse.
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError>;

    /// Persists bound B of `stream` durably.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it could not be made durable.
    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError>;

    /// The persisted replay window of the space keyed by `key_id`, least recently updated first;
    /// empty if none was saved.
    ///
    /// # Errors
    /// [`StoreError`] when the window cannot be read or does not parse.
    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError>;

    /// Persists the replay window of the space keyed by `key_id` (what
    /// [`ReplayWindow::export`] gives), replacing the previous one.
    ///
    /// # Errors
    /// [`StoreError::Io`] when it could not be written.
    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError>;
}

impl<S: CounterStore + ?Sized> CounterStore for &mut S {
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError> {
        (**self).load_bound(stream)
    }
    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError> {
        (**self).save_bound(stream, bound)
    }
    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError> {
        (**self).load_window(key_id)
    }
    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError> {
        (**self).save_window(key_id, entries)
    }
}

impl<S: CounterStore + ?Sized> CounterStore for Box<S> {
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError> {
        (**self).load_bound(stream)
    }
    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError> {
        (**self).save_bound(stream, bound)
    }
    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError> {
        (**self).load_window(key_id)
    }
    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError> {
        (**self).save_window(key_id, entries)
    }
}

/// A counter store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `sync`, `rename`, `create directory`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file exists but does not parse. It is not guessed around: fix or remove it by hand
    /// (removing a counter file is safe only with a new key or a new source id).
    #[error("{path} line {line}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// No counter can be allocated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CounterError {
    /// Counter 2³² − 1 has been used: this key can seal nothing more for this source id.
    #[error(
        "the last counter (2^32 - 1) of source id {source_id} on {transport} has been used with this key: re-key the space (a new sealing key) to seal again",
        transport = if matches!(.transport, Transport::Ble) { "BLE" } else { "UDP" }
    )]
    Exhausted {
        /// The transport.
        transport: Transport,
        /// The source id.
        source_id: NonZeroU16,
    },
    /// The next block of counters could not be reserved; nothing was used. Retrying is safe.
    #[error("could not reserve counters: {0}")]
    Store(#[from] StoreError),
}

/// Allocates the counters of one [`CounterStream`], reserving them in blocks of
/// [`RESERVATION_BLOCK`] through a [`CounterStore`] (spec §12). One store write (with fsync) per
/// 1024 counters; every other call is two integer compares.
///
/// A counter value MUST never be used twice with one key, transport and source id: CCM with a
/// repeated nonce leaks the XOR of two plaintexts and weakens the MIC. The allocator keeps the
/// persisted bound B above every counter it has handed out: when the next counter reaches B it
/// persists B + 1024 **before** handing it out, and on start it continues at B. A crash loses at
/// most the rest of the current block (up to 1024 counters); it never reuses one. The last
/// counter is 2³² − 1; after it [`next`](Self::next) refuses with [`CounterError::Exhausted`],
/// which says to re-key.
#[derive(Clone, Debug)]
pub struct CounterAllocator {
    stream: CounterStream,
    /// The next counter to use (may be [`COUNTER_LIMIT`]: exhausted).
    next: u64,
    /// The persisted bound B: counters below it are reserved.
    bound: u64,
}

impl CounterAllocator {
    /// Resumes `stream` at its persisted bound B (0 if none): spec §12 "on start it continues at
    /// B". Nothing is written until the first [`next`](Self::next).
    ///
    /// # Errors
    /// [`StoreError`] when the bound cannot be read.
    pub fn resume(
        stream: CounterStream,
        store: &mut (impl CounterStore + ?Sized),
    ) -> Result<Self, StoreError> {
        let bound = store.load_bound(&stream)?.unwrap_or(0).min(COUNTER_LIMIT);
        Ok(CounterAllocator {
            stream,
            next: bound,
            bound,
        })
    }

    /// The next counter, reserving a new block first (persisting B + 1024, at most 2³²) when it
    /// reaches the bound.
    ///
    /// # Errors
    /// [`CounterError::Exhausted`] after 2³² − 1 (re-key); [`CounterError::Store`] when the
    /// reservation could not be persisted (no counter is used then, and a retry is safe).
    pub fn next(&mut self, store: &mut (impl CounterStore + ?Sized)) -> Result<u32, CounterError> {
        let Ok(counter) = u32::try_from(self.next) else {
            return Err(CounterError::Exhausted {
                transport: self.stream.transport,
                source_id: self.stream.source_id,
            });
        };
        if self.next >= self.bound {
            let bound = (self.next + RESERVATION_BLOCK).min(COUNTER_LIMIT);
            store.save_bound(&self.stream, bound)?;
            self.bound = bound;
        }
        self.next += 1;
        Ok(counter)
    }

    /// The counter [`next`](Self::next) would return, `None` when exhausted.
    #[must_use]
    pub fn peek(&self) -> Option<u32> {
        u32::try_from(self.next).ok()
    }

    /// The bound B persisted (or loaded) last.
    #[must_use]
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// The stream.
    #[must_use]
    pub fn stream(&self) -> &CounterStream {
        &self.stream
    }
}

/// Loads and saves a [`ReplayWindow`] through a store.
impl ReplayWindow {
    /// A window of `sources` sources holding what `store` persisted for `key_id` (empty if
    /// nothing was). Spec §12: a receiver SHOULD persist the window across restarts; one that
    /// does not accepts replays of messages captured before.
    ///
    /// # Errors
    /// [`StoreError`] when the saved window cannot be read or is invalid.
    pub fn load(
        store: &mut (impl CounterStore + ?Sized),
        key_id: KeyId,
        sources: usize,
    ) -> Result<Self, StoreError> {
        let mut w = ReplayWindow::new(sources);
        let entries = store.load_window(key_id)?;
        w.import(entries).map_err(|e| StoreError::Corrupt {
            path: PathBuf::from(format!("window of key {key_id}")),
            line: 0,
            reason: e.to_string(),
        })?;
        Ok(w)
    }

    /// Persists this window for `key_id` (on shutdown and periodically).
    ///
    /// # Errors
    /// [`StoreError`] from the store.
    pub fn save(
        &self,
        store: &mut (impl CounterStore + ?Sized),
        key_id: KeyId,
    ) -> Result<(), StoreError> {
        store.save_window(key_id, &self.export())
    }
}

/// A [`CounterStore`] in one directory, one small text file per counter stream and per window,
/// each replaced atomically and fsynced.
///
/// # File formats
///
/// Both are UTF-8 text, `\n`-terminated lines, written to `NAME.tmp`, flushed to disk (fsync),
/// renamed over `NAME`, and the directory fsynced (on Unix), so a crash leaves the old or the new
/// file, never a torn one. A stale `NAME.tmp` is ignored.
///
/// - Counter bound, file `seal-counter-<key id>-<ble|udp>-<source id, 4 hex digits>`:
///
///   ```text
///   beets sealed counter v1
///   bound 2048
///   ```
///
///   `bound` is decimal, 0..=4294967296 (2³²: everything used).
/// - Replay window, file `seal-window-<key id>`: a header line, then one line per source, least
///   recently updated first: transport, source id (4 hex digits), the highest counter H
///   (decimal), the 64-bit map of H − 63..=H (16 hex digits, bit i = counter H − i):
///
///   ```text
///   beets replay window v1
///   ble 0102 7 0000000000000001
///   udp 0203 4294967294 8000000000000003
///   ```
///
/// The key id ([`KeyId`]) is a non-secret fingerprint of K, so re-keying starts fresh files and
/// two keys never share state. A file that does not parse is an error
/// ([`StoreError::Corrupt`]), never read as "no bound": guessing low could reuse counters.
#[derive(Clone, Debug)]
pub struct FileCounterStore {
    dir: PathBuf,
}

const COUNTER_HEADER: &str = "beets sealed counter v1";
const WINDOW_HEADER: &str = "beets replay window v1";

impl FileCounterStore {
    /// A store in `dir`, created (with its parents) if missing.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(FileCounterStore { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `stream`'s bound.
    #[must_use]
    pub fn counter_path(&self, stream: &CounterStream) -> PathBuf {
        self.dir.join(format!(
            "seal-counter-{}-{}-{:04x}",
            stream.key_id,
            transport_tag(stream.transport),
            stream.source_id
        ))
    }

    /// The file holding the replay window of `key_id`.
    #[must_use]
    pub fn window_path(&self, key_id: KeyId) -> PathBuf {
        self.dir.join(format!("seal-window-{key_id}"))
    }

    /// Reads a file, `None` if it does not exist.
    fn read(path: &Path) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Replaces `path` with `contents`: write `path.tmp`, fsync it, rename, fsync the directory.
    fn write_atomic(&self, path: &Path, contents: &str) -> Result<(), StoreError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(contents.as_bytes())
            .map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
        sync_dir(&self.dir).map_err(io("sync", &self.dir))
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened as files here; the rename is as durable as the OS makes it.
    Ok(())
}

fn transport_tag(t: Transport) -> &'static str {
    match t {
        Transport::Ble => "ble",
        Transport::Udp => "udp",
    }
}

fn corrupt(path: &Path, line: usize, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        line,
        reason: reason.into(),
    }
}

/// Parses a counter file.
fn parse_bound(path: &Path, text: &str) -> Result<u64, StoreError> {
    let mut lines = text.lines();
    if lines.next() != Some(COUNTER_HEADER) {
        return Err(corrupt(path, 1, format!("expected {COUNTER_HEADER:?}")));
    }
    let Some(bound) = lines.next().and_then(|l| l.strip_prefix("bound ")) else {
        return Err(corrupt(path, 2, "expected \"bound N\""));
    };
    let bound = bound
        .parse::<u64>()
        .ok()
        .filter(|&b| b <= COUNTER_LIMIT)
        .ok_or_else(|| corrupt(path, 2, "the bound is not a number in 0..=4294967296"))?;
    if lines.next().is_some() {
        return Err(corrupt(path, 3, "unexpected line after the bound"));
    }
    Ok(bound)
}

/// Parses a window file.
fn parse_window(path: &Path, text: &str) -> Result<Vec<WindowEntry>, StoreError> {
    let mut lines = text.lines();
    if lines.next() != Some(WINDOW_HEADER) {
        return Err(corrupt(path, 1, format!("expected {WINDOW_HEADER:?}")));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let bad = || corrupt(path, n, "expected \"ble|udp SSSS H BBBBBBBBBBBBBBBB\"");
        let mut f = line.split(' ');
        let (Some(t), Some(s), Some(h), Some(b), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        let transport = match t {
            "ble" => Transport::Ble,
            "udp" => Transport::Udp,
            _ => return Err(bad()),
        };
        let source_id = (s.len() == 4)
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
            .and_then(NonZeroU16::new)
            .ok_or_else(bad)?;
        let highest = h.parse::<u32>().map_err(|_| bad())?;
        let bitmap = (b.len() == 16)
            .then(|| u64::from_str_radix(b, 16).ok())
            .flatten()
            .filter(|m| m & 1 == 1)
            .ok_or_else(bad)?;
        out.push(WindowEntry {
            transport,
            source_id,
            highest,
            bitmap,
        });
    }
    Ok(out)
}

impl CounterStore for FileCounterStore {
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError> {
        let path = self.counter_path(stream);
        Self::read(&path)?
            .map(|text| parse_bound(&path, &text))
            .transpose()
    }

    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError> {
        let path = self.counter_path(stream);
        self.write_atomic(&path, &format!("{COUNTER_HEADER}\nbound {bound}\n"))
    }

    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError> {
        let path = self.window_path(key_id);
        Ok(Self::read(&path)?
            .map(|text| parse_window(&path, &text))
            .transpose()?
            .unwrap_or_default())
    }

    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(WINDOW_HEADER.len() + 1 + 40 * entries.len());
        text.push_str(WINDOW_HEADER);
        text.push('\n');
        for e in entries {
            let _ = writeln!(
                text,
                "{} {:04x} {} {:016x}",
                transport_tag(e.transport),
                e.source_id,
                e.highest,
                e.bitmap
            );
        }
        self.write_atomic(&self.window_path(key_id), &text)
    }
}

/// A [`CounterStore`] in memory, for tests and for nodes whose keys live no longer than the
/// process (then a restart MUST come with a new key or new source ids). Pass `&mut store` to keep
/// it across a simulated crash.
#[derive(Clone, Debug, Default)]
pub struct MemoryCounterStore {
    bounds: HashMap<CounterStream, u64>,
    windows: HashMap<KeyId, Vec<WindowEntry>>,
    saves: u64,
    fail: bool,
}

impl MemoryCounterStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The bound saved for `stream`.
    #[must_use]
    pub fn bound(&self, stream: &CounterStream) -> Option<u64> {
        self.bounds.get(stream).copied()
    }

    /// Sets the bound of `stream`, as if persisted earlier.
    pub fn set_bound(&mut self, stream: CounterStream, bound: u64) {
        self.bounds.insert(stream, bound);
    }

    /// Bounds saved so far ([`CounterStore::save_bound`] calls that succeeded).
    #[must_use]
    pub fn saves(&self) -> u64 {
        self.saves
    }

    /// Makes every later save fail (to test a full disk), or succeed again.
    pub fn set_failing(&mut self, fail: bool) {
        self.fail = fail;
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Io {
                action: "write",
                path: PathBuf::from("<memory>"),
                source: io::Error::other("simulated failure"),
            })
        } else {
            Ok(())
        }
    }
}

impl CounterStore for MemoryCounterStore {
    fn load_bound(&mut self, stream: &CounterStream) -> Result<Option<u64>, StoreError> {
        Ok(self.bound(stream))
    }

    fn save_bound(&mut self, stream: &CounterStream, bound: u64) -> Result<(), StoreError> {
        self.check()?;
        self.bounds.insert(*stream, bound);
        self.saves += 1;
        Ok(())
    }

    fn load_window(&mut self, key_id: KeyId) -> Result<Vec<WindowEntry>, StoreError> {
        Ok(self.windows.get(&key_id).cloned().unwrap_or_default())
    }

    fn save_window(&mut self, key_id: KeyId, entries: &[WindowEntry]) -> Result<(), StoreError> {
        self.check()?;
        self.windows.insert(key_id, entries.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
