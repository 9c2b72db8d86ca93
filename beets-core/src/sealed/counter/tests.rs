//! Counter reservation across crashes, exhaustion, and the file formats.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::sealed::{OpenError, SealKey, Sealer, SealerError};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "beets-sealed-{name}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn key() -> SealKey {
    SealKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap()
}

fn src(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

fn stream(t: Transport, s: u16) -> CounterStream {
    CounterStream {
        key_id: key().id(),
        transport: t,
        source_id: src(s),
    }
}

/// §10 OUT tuple, plain.
const PLAIN: [u8; 21] = [
    0x48, 0xf6, 0x0c, 0x53, 0x45, 0x4e, 0x53, 0x4f, 0x52, 0x0a, 0x4c, 0x49, 0x47, 0x48, 0x54, 0x02,
    0x00, 0x3f, 0xc0, 0x00, 0x00,
];

/// Seals `n` messages and returns their counters.
fn seal_n<S: CounterStore>(sealer: &mut Sealer<S>, n: usize) -> Vec<u32> {
    let mut out = [0u8; 64];
    (0..n)
        .map(|_| sealer.seal(&PLAIN, &mut out).unwrap().counter)
        .collect()
}

#[test]
fn reserves_a_block_before_using_it() {
    let mut store = MemoryCounterStore::new();
    let mut sealer = Sealer::new(key(), Transport::Ble, src(1), &mut store).unwrap();
    assert_eq!(seal_n(&mut sealer, 1), [0]);
    let counters = seal_n(&mut sealer, 1024);
    assert_eq!(counters, (1..=1024).collect::<Vec<_>>());
    drop(sealer);
    // Counter 0 reserved 0..1024; counter 1024 reserved 1024..2048.
    assert_eq!(store.saves(), 2);
    assert_eq!(store.bound(&stream(Transport::Ble, 1)), Some(2048));
}

#[test]
fn file_store_never_reuses_a_counter_across_crashes() {
    let dir = TempDir::new("crash");
    let mut used = HashSet::new();
    let mut last = None;
    for (run, n) in [3usize, 0, 1500, 1, 1023, 1024, 7].into_iter().enumerate() {
        // Each run starts from the files alone and ends without any shutdown (a crash).
        let store = FileCounterStore::open(&dir.0).unwrap();
        let mut sealer = Sealer::new(key(), Transport::Udp, src(0x0203), store).unwrap();
        for c in seal_n(&mut sealer, n) {
            assert!(used.insert(c), "run {run}: counter {c} reused");
            assert!(last < Some(c), "run {run}: counter {c} not increasing");
            last = Some(c);
        }
        drop(sealer);
    }
    // Runs restart at the bound: 0..3 | (nothing, reserves nothing) | 1024..2524 | 3072 | ...
    let store = FileCounterStore::open(&dir.0).unwrap();
    let mut sealer = Sealer::new(key(), Transport::Udp, src(0x0203), store).unwrap();
    let next = seal_n(&mut sealer, 1)[0];
    assert!(next > last.unwrap());
    assert_eq!(u64::from(next) % RESERVATION_BLOCK, 0);
    // Another transport or source id is another stream.
    let store = FileCounterStore::open(&dir.0).unwrap();
    let mut other = Sealer::new(key(), Transport::Ble, src(0x0203), store).unwrap();
    assert_eq!(seal_n(&mut other, 1), [0]);
}

#[test]
fn a_failed_reservation_uses_no_counter() {
    let mut store = MemoryCounterStore::new();
    let mut alloc = CounterAllocator::resume(stream(Transport::Ble, 1), &mut store).unwrap();
    store.set_failing(true);
    assert!(matches!(
        alloc.next(&mut store),
        Err(CounterError::Store(StoreError::Io { .. }))
    ));
    assert_eq!(alloc.peek(), Some(0));
    store.set_failing(false);
    assert_eq!(alloc.next(&mut store).unwrap(), 0);
    assert_eq!(alloc.bound(), 1024);
}

#[test]
fn refuses_after_the_last_counter_and_says_to_rekey() {
    let mut store = MemoryCounterStore::new();
    store.set_bound(stream(Transport::Ble, 1), 0xffff_fffe);
    let mut sealer = Sealer::new(key(), Transport::Ble, src(1), &mut store).unwrap();
    assert_eq!(seal_n(&mut sealer, 2), [0xffff_fffe, 0xffff_ffff]);
    assert_eq!(sealer.next_counter(), None);
    let mut out = [0u8; 64];
    let e = sealer.seal(&PLAIN, &mut out).unwrap_err();
    assert!(
        matches!(e, SealerError::Counter(CounterError::Exhausted { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("re-key"), "{e}");
    drop(sealer);
    assert_eq!(store.bound(&stream(Transport::Ble, 1)), Some(COUNTER_LIMIT));
    // After a restart too.
    let mut sealer = Sealer::new(key(), Transport::Ble, src(1), &mut store).unwrap();
    assert!(matches!(
        sealer.seal(&PLAIN, &mut out),
        Err(SealerError::Counter(CounterError::Exhausted { .. }))
    ));
}

#[test]
fn file_store_refuses_at_the_limit() {
    let dir = TempDir::new("limit");
    let mut store = FileCounterStore::open(&dir.0).unwrap();
    store
        .save_bound(&stream(Transport::Udp, 1), COUNTER_LIMIT)
        .unwrap();
    let mut sealer = Sealer::new(key(), Transport::Udp, src(1), store).unwrap();
    let mut out = [0u8; 64];
    assert!(matches!(
        sealer.seal(&PLAIN, &mut out),
        Err(SealerError::Counter(CounterError::Exhausted { .. }))
    ));
}

#[test]
fn counter_file_format_round_trip() {
    let dir = TempDir::new("format");
    let mut store = FileCounterStore::open(&dir.0).unwrap();
    let s = stream(Transport::Ble, 0x0102);
    assert_eq!(store.load_bound(&s).unwrap(), None);
    store.save_bound(&s, 2048).unwrap();
    let path = store.counter_path(&s);
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        format!("seal-counter-{}-ble-0102", key().id())
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "beets sealed counter v1\nbound 2048\n"
    );
    assert_eq!(store.load_bound(&s).unwrap(), Some(2048));
    // No temp file is left behind; a stale one (a crash before the rename) is ignored.
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    assert!(!tmp.exists());
    fs::write(&tmp, "beets sealed counter v1\nbound 9999\n").unwrap();
    assert_eq!(store.load_bound(&s).unwrap(), Some(2048));
    // A damaged file is an error, never "start at 0".
    for bad in [
        "",
        "bound 2048\n",
        "beets sealed counter v1\nbound -1\n",
        "beets sealed counter v1\nbound 4294967297\n",
        "beets sealed counter v1\nbound 12\nbound 13\n",
        "beets sealed counter v1\n",
    ] {
        fs::write(&path, bad).unwrap();
        assert!(
            matches!(store.load_bound(&s), Err(StoreError::Corrupt { .. })),
            "{bad:?}"
        );
        assert!(Sealer::new(key(), Transport::Ble, src(0x0102), store.clone()).is_err());
    }
}

#[test]
fn window_file_format_round_trip() {
    let dir = TempDir::new("window");
    let mut store = FileCounterStore::open(&dir.0).unwrap();
    let id = key().id();
    assert!(store.load_window(id).unwrap().is_empty());
    let entries = [
        WindowEntry {
            transport: Transport::Ble,
            source_id: src(0x0102),
            highest: 7,
            bitmap: 1,
        },
        WindowEntry {
            transport: Transport::Udp,
            source_id: src(0x0203),
            highest: 0xffff_fffe,
            bitmap: 0x8000_0000_0000_0003,
        },
    ];
    store.save_window(id, &entries).unwrap();
    assert_eq!(
        fs::read_to_string(store.window_path(id)).unwrap(),
        "beets replay window v1\nble 0102 7 0000000000000001\nudp 0203 4294967294 8000000000000003\n"
    );
    assert_eq!(store.load_window(id).unwrap(), entries);
    for bad in [
        "beets replay window v2\n",
        "beets replay window v1\nble 0102 7\n",
        "beets replay window v1\nxyz 0102 7 0000000000000001\n",
        "beets replay window v1\nble 0000 7 0000000000000001\n",
        "beets replay window v1\nble 102 7 0000000000000001\n",
        "beets replay window v1\nble 0102 7 0000000000000002\n",
        "beets replay window v1\nble 0102 4294967296 0000000000000001\n",
        "beets replay window v1\nble 0102 7 0000000000000001 x\n",
    ] {
        fs::write(store.window_path(id), bad).unwrap();
        assert!(
            matches!(store.load_window(id), Err(StoreError::Corrupt { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn a_persisted_window_drops_replays_after_a_restart() {
    let dir = TempDir::new("restart");
    let k = key();
    let sealed = k
        .seal_to_vec(Transport::Ble, src(0x0102), 7, &PLAIN)
        .unwrap();
    {
        let mut store = FileCounterStore::open(&dir.0).unwrap();
        let mut window = ReplayWindow::load(&mut store, k.id(), 4096).unwrap();
        k.receive(&mut window, Transport::Ble, &sealed).unwrap();
        window.save(&mut store, k.id()).unwrap();
    }
    let mut store = FileCounterStore::open(&dir.0).unwrap();
    let mut window = ReplayWindow::load(&mut store, k.id(), 4096).unwrap();
    assert!(matches!(
        k.receive(&mut window, Transport::Ble, &sealed),
        Err(OpenError::Duplicate { counter: 7, .. })
    ));
    // Without the persisted window the replay would have been accepted (spec §12 says so).
    let mut fresh = ReplayWindow::default();
    assert!(k.receive(&mut fresh, Transport::Ble, &sealed).is_ok());
}

#[test]
fn memory_store_keeps_windows() {
    let mut store = MemoryCounterStore::new();
    let mut w = ReplayWindow::new(4);
    let k = key();
    let sealed = k.seal_to_vec(Transport::Udp, src(3), 1, &PLAIN).unwrap();
    k.receive(&mut w, Transport::Udp, &sealed).unwrap();
    w.save(&mut store, k.id()).unwrap();
    let back = ReplayWindow::load(&mut store, k.id(), 4).unwrap();
    assert_eq!(back.export(), w.export());
}
