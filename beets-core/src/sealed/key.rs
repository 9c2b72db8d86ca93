//! The sealing key K and the privacy key P derived from it (spec §12 "Key").

use core::fmt;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use ccm::Ccm;
use ccm::consts::{U4, U8, U13};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes of a sealing key K: 16 (AES-128).
pub const KEY_LEN: usize = 16;
/// Salt of the password KDF: the ASCII bytes `BeeTS sealed v1` (spec §12 "Key").
pub const KDF_SALT: &[u8] = b"BeeTS sealed v1";
/// PBKDF2-HMAC-SHA256 iterations of the password KDF: 100 000 (spec §12 "Key").
pub const KDF_ITERATIONS: u32 = 100_000;
/// The block AES-128-ECB encrypts under K to give the privacy key P: the ASCII bytes
/// `BeeTS privacy v1` (spec §12 "Key").
pub const PRIVACY_LABEL: [u8; 16] = *b"BeeTS privacy v1";
/// The block AES-128-ECB encrypts under K for [`KeyId`]. Not part of the wire format: the key
/// id only names local state (counter and window files) and never goes on the air.
const KEY_ID_LABEL: [u8; 16] = *b"BeeTS key id v1\0";

/// AES-128-CCM with the 4-byte MIC of BLE and the 13-byte nonce of spec §12.
pub(crate) type CcmBle = Ccm<Aes128, U4, U13>;
/// AES-128-CCM with the 8-byte MIC of UDP and the 13-byte nonce of spec §12.
pub(crate) type CcmUdp = Ccm<Aes128, U8, U13>;

/// The key of a sealed space (spec §12): K for AES-128-CCM and the privacy key
/// P = AES-128-ECB(K, `BeeTS privacy v1`) for header obfuscation, both expanded once.
///
/// Build it once per space ([`from_hex`](Self::from_hex), [`from_password`](Self::from_password)
/// or [`from_bytes`](Self::from_bytes)) and keep it: sealing and opening then cost a few AES
/// blocks and no allocation.
///
/// The key bytes are not kept; only the AES key schedules are, and the `aes` crate (built with
/// its `zeroize` feature) overwrites them when the key is dropped. [`Debug`](fmt::Debug) prints
/// the [`KeyId`] only, never key material. `Clone` copies the schedules; each copy is wiped on its
/// own drop.
#[derive(Clone)]
pub struct SealKey {
    pub(crate) ble: CcmBle,
    pub(crate) udp: CcmUdp,
    pub(crate) privacy: Aes128,
    id: KeyId,
}

// Every field wipes itself on drop (the `aes` crate's `zeroize` feature; `Ccm` holds an `Aes128`).
impl ZeroizeOnDrop for SealKey {}

/// A non-secret 8-byte name of a [`SealKey`], the first 8 bytes of AES-128-ECB(K,
/// `BeeTS key id v1\0`): the same key always has the same id, and the id tells nothing about K.
/// It names the key's local state (see [`FileCounterStore`](super::FileCounterStore)); it is not
/// part of the wire format. Displayed as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Why a hex sealing key was refused by [`SealKey::from_hex`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not 32 hex digits (whitespace is not allowed either).
    #[error("a sealing key is 32 hex digits (16 bytes), got {len} characters")]
    BadLength {
        /// Characters given.
        len: usize,
    },
    /// A character that is not `0-9`, `a-f` or `A-F`.
    #[error("a sealing key is 32 hex digits: {found:?} at position {position} is not a hex digit")]
    BadDigit {
        /// Position of the character (0-based, in characters).
        position: usize,
        /// The character.
        found: char,
    },
}

impl SealKey {
    /// The key K given as 16 bytes.
    #[must_use]
    pub fn from_bytes(mut k: [u8; KEY_LEN]) -> SealKey {
        let mut array = Array::from(k);
        k.zeroize();
        let cipher = Aes128::new(&array);
        array.as_mut_slice().zeroize();
        let mut p = derive_privacy_key(&cipher);
        let privacy = Aes128::new(&Array::from(p));
        p.zeroize();
        let mut id = Array::from(KEY_ID_LABEL);
        cipher.encrypt_block(&mut id);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&id[..8]);
        SealKey {
            ble: CcmBle::from(cipher.clone()),
            udp: CcmUdp::from(cipher),
            privacy,
            id: KeyId(key_id),
        }
    }

    /// The key K given as exactly 32 hex digits (either case), e.g.
    /// `000102030405060708090a0b0c0d0e0f` (spec §12 "Key").
    ///
    /// # Errors
    /// [`KeyError::BadLength`] unless 32 characters, [`KeyError::BadDigit`] naming the first
    /// character that is not a hex digit.
    pub fn from_hex(hex: &str) -> Result<SealKey, KeyError> {
        let len = hex.chars().count();
        if len != 2 * KEY_LEN {
            return Err(KeyError::BadLength { len });
        }
        let mut k = [0u8; KEY_LEN];
        for (position, c) in hex.chars().enumerate() {
            let Some(d) = c.to_digit(16) else {
                k.zeroize();
                return Err(KeyError::BadDigit { position, found: c });
            };
            // A hex digit is < 16, so the cast is exact.
            k[position / 2] = (k[position / 2] << 4) | d as u8;
        }
        let key = SealKey::from_bytes(k);
        k.zeroize();
        Ok(key)
    }

    /// Derives K from a password (spec §12 "Key"): PBKDF2-HMAC-SHA256 over the password's UTF-8
    /// bytes as given (no Unicode normalisation), salt [`KDF_SALT`], [`KDF_ITERATIONS`]
    /// iterations, 16 bytes.
    ///
    /// Cost: 100 000 HMAC-SHA256 computations, some 30 ms in a release build on a desktop CPU
    /// (ten times that unoptimised): derive once per space at start, not per message. Every
    /// password is accepted, the empty one included; a deployment should use a long random one
    /// (or a random hex key), since anyone who guesses it holds the space.
    #[must_use]
    pub fn from_password(password: &str) -> SealKey {
        let mut k = derive_password_key(password);
        let key = SealKey::from_bytes(k);
        k.zeroize();
        key
    }

    /// The key's non-secret local name (see [`KeyId`]).
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// K from a password (spec §12 "Key").
pub(crate) fn derive_password_key(password: &str) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), KDF_SALT, KDF_ITERATIONS, &mut k);
    k
}

/// P = AES-128-ECB(K, `BeeTS privacy v1`), given K's cipher (spec §12 "Key").
pub(crate) fn derive_privacy_key(k: &Aes128) -> [u8; KEY_LEN] {
    let mut block = Array::from(PRIVACY_LABEL);
    k.encrypt_block(&mut block);
    let p: [u8; KEY_LEN] = block.into();
    block.as_mut_slice().zeroize();
    p
}
