//! [`Sealer`]: one node's sending side of a sealed space on one transport.

use std::num::NonZeroU16;

use super::counter::{CounterAllocator, CounterError, CounterStore, CounterStream, StoreError};
use super::key::SealKey;
use super::{MAX_OPENED_LEN, SealError, check_plain};
use crate::message::Message;
use crate::node::Transport;

/// What [`Sealer::seal`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes of the sealed message at the start of the output buffer.
    pub len: usize,
    /// The counter it was sealed with.
    pub counter: u32,
}

/// Why [`Sealer::seal`] sealed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealerError {
    /// The input was refused (no counter was spent).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// No counter could be allocated: exhausted (re-key) or the store failed.
    #[error(transparent)]
    Counter(#[from] CounterError),
}

/// Key, source id, transport and counter allocation together: seals each message with the next
/// counter of (K, transport, source id), reserving counters through its [`CounterStore`] as spec
/// §12 says (one durable write per 1024 messages).
///
/// A node that sends on both transports has one `Sealer` per transport (counters are per
/// transport), both with the node's one source id for the key. Source ids MUST be unique among
/// all nodes sharing the key (spec §12).
///
/// ```
/// use std::num::NonZeroU16;
/// use beets_core::sealed::{MemoryCounterStore, SealKey, Sealer};
/// use beets_core::{Message, Transport};
///
/// let key = SealKey::from_hex("000102030405060708090a0b0c0d0e0f")?;
/// let source = NonZeroU16::new(0x0102).unwrap();
/// let mut sealer = Sealer::new(key, Transport::Udp, source, MemoryCounterStore::new())?;
/// let msg = Message::Rd("(\"SENSOR\", ?)".parse()?);
/// let mut out = [0u8; 64];
/// let first = sealer.seal_message(&msg, &mut out)?;
/// let second = sealer.seal_message(&msg, &mut out)?;
/// assert_eq!((first.counter, second.counter), (0, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Sealer<S: CounterStore> {
    key: SealKey,
    counter: CounterAllocator,
    store: S,
}

impl<S: CounterStore> Sealer<S> {
    /// A sealer that continues the counter of (`key`, `transport`, `source_id`) where `store`
    /// left it (spec §12: at the persisted bound B).
    ///
    /// # Errors
    /// [`StoreError`] when the bound cannot be read.
    pub fn new(
        key: SealKey,
        transport: Transport,
        source_id: NonZeroU16,
        mut store: S,
    ) -> Result<Self, StoreError> {
        let stream = CounterStream {
            key_id: key.id(),
            transport,
            source_id,
        };
        let counter = CounterAllocator::resume(stream, &mut store)?;
        Ok(Sealer {
            key,
            counter,
            store,
        })
    }

    /// Seals the plain version-1 message `plain` (see [`SealKey::seal`]) with the next counter
    /// into `out`. Input errors are found before a counter is spent.
    ///
    /// # Errors
    /// [`SealerError::Seal`] for input [`SealKey::seal`] refuses or an `out` too small;
    /// [`SealerError::Counter`] when counters are exhausted (re-key) or cannot be reserved.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<Sealed, SealerError> {
        let transport = self.transport();
        check_plain(transport, plain)?;
        let needed = transport.sealed_len(plain.len());
        if out.len() < needed {
            return Err(SealError::BufferTooSmall {
                needed,
                available: out.len(),
            }
            .into());
        }
        let counter = self.counter.next(&mut self.store)?;
        let len = self
            .key
            .seal(transport, self.source_id(), counter, plain, out)?;
        Ok(Sealed { len, counter })
    }

    /// [`seal`](Self::seal) into a new vector; returns it and the counter used.
    ///
    /// # Errors
    /// As [`seal`](Self::seal), except the buffer size.
    pub fn seal_to_vec(&mut self, plain: &[u8]) -> Result<(Vec<u8>, u32), SealerError> {
        check_plain(self.transport(), plain)?;
        let mut out = vec![0; self.transport().sealed_len(plain.len())];
        let sealed = self.seal(plain, &mut out)?;
        out.truncate(sealed.len);
        Ok((out, sealed.counter))
    }

    /// Emits `message` without an FPE key and seals it (see [`seal`](Self::seal)); no
    /// allocation.
    ///
    /// # Errors
    /// [`SealError::TooLong`] (in [`SealerError::Seal`]) when the message's body exceeds the
    /// transport's sealed body (20 bytes on BLE, 1206 on UDP), naming both sizes; otherwise as
    /// [`seal`](Self::seal).
    pub fn seal_message(
        &mut self,
        message: &Message,
        out: &mut [u8],
    ) -> Result<Sealed, SealerError> {
        let transport = self.transport();
        let len = message.buffer_len();
        let mut buf = [0u8; MAX_OPENED_LEN];
        let Some(buf) = buf.get_mut(..len) else {
            return Err(SealError::TooLong {
                body_len: len - 1,
                max_body_len: transport.sealed_max_body_len(),
                sealed_len: transport.sealed_len(len),
                max_len: transport.max_message_len(),
                transport: transport.name(),
            }
            .into());
        };
        let n = message
            .emit(buf, None)
            .map_err(|e| SealError::BufferTooSmall {
                needed: e.needed,
                available: e.available,
            })?;
        self.seal(&buf[..n], out)
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &SealKey {
        &self.key
    }

    /// The transport.
    #[must_use]
    pub fn transport(&self) -> Transport {
        self.counter.stream().transport
    }

    /// The source id.
    #[must_use]
    pub fn source_id(&self) -> NonZeroU16 {
        self.counter.stream().source_id
    }

    /// The counter the next message gets, `None` when exhausted.
    #[must_use]
    pub fn next_counter(&self) -> Option<u32> {
        self.counter.peek()
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (e.g. to save a replay window through it).
    #[must_use]
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    #[must_use]
    pub fn into_store(self) -> S {
        self.store
    }
}
