//! Format-preserving "encryption" of message bodies (spec §5), compatible with `node-fpe` 1.x.
//!
//! A space key turns a password into a secret permutation of the byte values `0..=255`. Sending,
//! every byte of a message after byte 0 (the control byte, spec §4, stays in clear and carries the
//! E flag) is replaced by `enc[b]`; receiving, by `dec[b]`. Lengths do not change, which is why a
//! message still fits its BLE frame once encrypted.
//!
//! The tables are the ones the JavaScript module `node-fpe` 1.x builds for the domain of the 256
//! one-character strings `"\u{0}"..="\u{ff}"`, the FPE that the BeeTS paper (S. Bosse, 2022,
//! arXiv 2204.02464) uses, so a Rust node and a JavaScript node that share a password understand
//! each other. Derivation (spec §5):
//!
//! 1. key (32 B) and IV (16 B) from the UTF-8 bytes of the password with OpenSSL
//!    `EVP_BytesToKey`, MD5, no salt, 1 iteration: `D1 = MD5(pw)`, `D2 = MD5(D1‖pw)`,
//!    `D3 = MD5(D2‖pw)`; key = `D1‖D2`, IV = `D3`;
//! 2. for each b, `c_b` = AES-256-CBC(key, IV, PKCS#7(UTF-8 of the code point b)), one block;
//! 3. `enc` = the values b sorted by `c_b` (lexicographic bytes), `dec` = `enc`⁻¹.
//!
//! # This is obfuscation, not encryption
//!
//! Whatever the name says, the result is a **fixed substitution of single bytes**:
//!
//! - it falls to frequency analysis: equal plaintext bytes give equal ciphertext bytes, in every
//!   message, for as long as the password is in use; a listener who knows or guesses some
//!   messages (tuple signatures, `"NODE"`, common names) recovers table entries directly;
//! - there is **no integrity**: anyone can flip, replace or forge bytes; a forged message is only
//!   as hard to make as guessing which bytes decode to a valid tuple;
//! - there is **no replay protection**: a recorded message can be sent again at any time;
//! - lengths and timing are visible.
//!
//! It hides content from a casual listener and keeps the spaces of different passwords apart, and
//! that is all. An authenticated format is planned and will use another version number (the VER
//! field of the control byte, spec §4).
//!
//! # Example
//!
//! ```
//! use beets_core::fpe::FpeKey;
//!
//! let key = FpeKey::from_password("secret");
//! // Spec §10: enc[0..8] for the password "secret".
//! assert_eq!(key.enc_table()[..8], [0x70, 0x2a, 0x02, 0x11, 0x34, 0xe6, 0xa3, 0x54]);
//!
//! let mut body = *b"SENSOR";
//! key.encrypt(&mut body);
//! assert_ne!(&body, b"SENSOR");
//! key.decrypt(&mut body);
//! assert_eq!(&body, b"SENSOR");
//! ```

use core::fmt;

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use md5::{Digest, Md5};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Number of values in the byte domain the permutation acts on (`0..=255`, spec §5).
const DOMAIN: usize = 256;

/// The per-space FPE key of spec §5: the substitution table `enc` and its inverse `dec`.
///
/// Build it once per tuple space with [`FpeKey::from_password`] (about 10 µs) and keep it; the
/// per-message work is one table lookup per byte.
///
/// Both tables are overwritten with zeros when the key is dropped. [`Debug`](fmt::Debug) never
/// shows them (it prints `FpeKey { .. }`). `Clone` copies the tables; each copy is wiped on its
/// own drop.
///
/// See the [module documentation](self) for why this is obfuscation and not authenticated
/// encryption.
#[derive(Clone)]
pub struct FpeKey {
    /// `enc[b]` is the encryption of byte value `b`.
    enc: [u8; DOMAIN],
    /// `dec[c]` is the decryption of byte value `c`; `dec[enc[b]] == b`.
    dec: [u8; DOMAIN],
}

impl FpeKey {
    /// Derives the key of a tuple space from its password (spec §5).
    ///
    /// `password` is used as its UTF-8 bytes, exactly like `node-fpe`'s string password; any
    /// string is accepted, the empty one included (a real deployment should use a long random
    /// password, although no password makes this cipher strong, see the module docs).
    ///
    /// Cost: three MD5 blocks, one AES-256 key schedule, 256 AES blocks and a sort of 256 keys;
    /// on a desktop CPU with AES instructions, around 10 µs.
    ///
    /// Intermediate material (AES key, IV, the 256 ciphertext blocks and sort keys) is wiped
    /// before returning, on a best-effort basis: copies the compiler makes on the stack, and the
    /// key schedule inside the `aes` cipher object, are out of reach of this function.
    ///
    /// # Panics
    ///
    /// Never.
    #[must_use]
    pub fn from_password(password: &str) -> FpeKey {
        let pw = password.as_bytes();

        // OpenSSL EVP_BytesToKey(MD5, no salt, count 1) for 32 B of key and 16 B of IV.
        let mut d1: [u8; 16] = Md5::digest(pw).into();
        let mut d2: [u8; 16] = Md5::new()
            .chain_update(d1)
            .chain_update(pw)
            .finalize()
            .into();
        let mut iv: [u8; 16] = Md5::new()
            .chain_update(d2)
            .chain_update(pw)
            .finalize()
            .into();
        let mut key = Array::<u8, _>::from([0u8; 32]);
        key[..16].copy_from_slice(&d1);
        key[16..].copy_from_slice(&d2);
        d1.zeroize();
        d2.zeroize();

        // Each message p_b is at most 2 bytes, so PKCS#7 makes it exactly one block and CBC over
        // a single block is AES(pad(p_b) XOR IV). Written this way, the 256 independent blocks go
        // through the cipher in one batch (pipelined AES-NI / ARMv8 instructions); a
        // `cbc::Encryptor` would need a fresh instance and one call per block. The unit test
        // `batch_path_matches_cbc_encryptor` checks the equivalence block by block.
        let cipher = Aes256::new(&key);
        key.as_mut_slice().zeroize();
        let mut blocks = [aes::Block::default(); DOMAIN];
        for (b, block) in (0..=u8::MAX).zip(blocks.iter_mut()) {
            *block = Array::from(padded_utf8(b));
            for (x, v) in block.iter_mut().zip(iv) {
                *x ^= v;
            }
        }
        iv.zeroize();
        cipher.encrypt_blocks(&mut blocks);
        drop(cipher);

        // Big-endian u128 order is the lexicographic order of the 16 bytes, and compares in one
        // or two instructions instead of a memcmp.
        let mut sort_keys = [0u128; DOMAIN];
        for (k, block) in sort_keys.iter_mut().zip(blocks.iter_mut()) {
            let mut bytes: [u8; 16] = (*block).into();
            *k = u128::from_be_bytes(bytes);
            bytes.zeroize();
            block.as_mut_slice().zeroize();
        }

        // AES is a permutation and the 256 padded messages differ, so the keys are distinct and
        // the unstable sort gives the one order node-fpe gets.
        let mut enc = [0u8; DOMAIN];
        for (slot, b) in enc.iter_mut().zip(0..=u8::MAX) {
            *slot = b;
        }
        enc.sort_unstable_by_key(|&b| sort_keys[usize::from(b)]);
        sort_keys.zeroize();

        let mut dec = [0u8; DOMAIN];
        for (i, &e) in (0..=u8::MAX).zip(enc.iter()) {
            dec[usize::from(e)] = i;
        }
        FpeKey { enc, dec }
    }

    /// Encrypts a message body in place: every byte `b` becomes `enc[b]` (spec §5).
    ///
    /// Pass the bytes **after** byte 0 of the message (the control byte is never encrypted,
    /// spec §4); the lifetime, when present, is part of the body. Any length is fine, the empty
    /// slice included. The length does not change.
    ///
    /// # Panics
    ///
    /// Never.
    #[inline]
    pub fn encrypt(&self, body: &mut [u8]) {
        apply(&self.enc, body);
    }

    /// Decrypts a message body in place: every byte `c` becomes `dec[c]` (spec §5); the inverse
    /// of [`FpeKey::encrypt`].
    ///
    /// Pass the bytes after byte 0 of a message whose E flag is set (spec §4). Any byte string
    /// decrypts to *something*: this cipher cannot tell a wrong key or a forged message; the
    /// message decoder that runs next is the only check.
    ///
    /// # Panics
    ///
    /// Never.
    #[inline]
    pub fn decrypt(&self, body: &mut [u8]) {
        apply(&self.dec, body);
    }

    /// The encryption of one byte value, `enc[b]` (spec §5).
    #[inline]
    #[must_use]
    pub fn encrypt_byte(&self, b: u8) -> u8 {
        self.enc[usize::from(b)]
    }

    /// The decryption of one byte value, `dec[c]` (spec §5); `decrypt_byte(encrypt_byte(b)) == b`.
    #[inline]
    #[must_use]
    pub fn decrypt_byte(&self, c: u8) -> u8 {
        self.dec[usize::from(c)]
    }

    /// The whole encryption table: entry `i` is `enc[i]`, a permutation of `0..=255` (spec §5).
    ///
    /// Meant for diagnostics and for comparing with `node-fpe` (e.g. a CLI `fpe-table` command).
    /// The table *is* the secret: whoever sees it can read and forge every message of the space.
    #[must_use]
    pub fn enc_table(&self) -> &[u8; 256] {
        &self.enc
    }
}

/// PKCS#7-padded UTF-8 encoding of the code point `b` (spec §5 step 2): one byte for `b < 0x80`,
/// two bytes (`110000xx 10xxxxxx`) otherwise, then the pad bytes.
fn padded_utf8(b: u8) -> [u8; 16] {
    if b < 0x80 {
        let mut p = [15u8; 16];
        p[0] = b;
        p
    } else {
        let mut p = [14u8; 16];
        p[0] = 0xC0 | (b >> 6);
        p[1] = 0x80 | (b & 0x3F);
        p
    }
}

/// Replaces every byte `b` of `body` by `table[b]`. An index from a `u8` into a 256-entry array
/// needs no bounds check, so this compiles to a plain load/store loop.
#[inline]
fn apply(table: &[u8; DOMAIN], body: &mut [u8]) {
    for b in body {
        *b = table[usize::from(*b)];
    }
}

impl fmt::Debug for FpeKey {
    /// Prints `FpeKey { .. }`: the tables are the secret and never appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FpeKey").finish_non_exhaustive()
    }
}

impl FpeKey {
    /// Overwrites both tables with zeros (the key is unusable afterwards); called by `Drop`.
    fn wipe(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
    }
}

impl Drop for FpeKey {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl ZeroizeOnDrop for FpeKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// Full tables computed with Node.js 20 `crypto.createCipher('aes-256-cbc', password)` over
    /// the 256 one-character strings, sorted by hex ciphertext (what node-fpe 1.0.0 does), and
    /// independently with Python `hashlib` + `cryptography`.
    const TABLE_SECRET: &str = "\
        702a021134e6a3548d97077ec7d22f4fe5a9103bf8caf74cb0eadfdee03c31c4\
        75bbd4745d7c4161387904af726e820187dc1d05404378716856919c2b5e44cb\
        6d2e0e08c6aab385205b7f48d76909e1fd9ba035b9b126ce7622e9d0033725ad\
        53ddc39495921e2d27c18c981567c85a1a51f1ccd5e28bece3e70b52f4ab590a\
        21cfbd7b148033ebf565a486c58eedf30c29175073ee3e45b81f6c819f000d4e\
        6ab5134784993da2fa0f89572cd930fb6b9e907ddaa6fcdb49f262fe9af6ff9d\
        e4b4c260bf774a965ca5ba8a36553946d1324df0884b64ae28068f7abc6f83d8\
        1816a166ef12acbee8f95fb763191c3a42c03f58231bc924b2a7b6cda8d3d693";
    const TABLE_EMPTY: &str = "\
        c93f1edbf7bada061732e8f09209f1267edc397243fba6f436e7ae76b779ee41\
        931386887f97fcb19559ddf85b78e3fd69811b166a71002418ead07bcbed3e75\
        52508cd4b3e903c3fe987357e1296d2b831d4c127db69cdfc6372db2198b5d5a\
        b04220a19e08452564f5fae502acc8a7b9cd216c82d9ab4f0dc4e2c50c4dc774\
        e00a49a2c22a5cec1f770ed830be689fa5a9a88060c0343d62ca05614a7af67c\
        a34b46f9315463c1d1d327de51443a48ccd510b55e14d7283c9d56154ef3f26e\
        6622ad3b2c6be423852fb49040af472e0f67bdd2eb11655338041a358d5f8f70\
        87a40b99011cbc6f07a0e63391d658aaffbb96ceefb8845594bf898e9acf8a9b";
    const TABLE_GRUESSE: &str = "\
        0b62b51003ee6cc9118730a95c45e6171456317b3241b72b01bfcd70e38320cf\
        221dfe9e0dff21ed6f5deb1cce0cf6fdd469d7ad97c35b19168ebedd4e139976\
        182a4d478f8239045a3ddb27fcf1dca88c2967c50a861bd002b4d5c75298d9ca\
        42b2f54937f4b643e8ab71c23b631281609d6175e1253a6a3344b8e4a2d89273\
        05cbac889f7e48513f34d2f0fa9a91c82ce5bbf7ec6ee9aef8b307a494fb284b\
        2d9ba04a5579df268054857f6424667cb17adae7c09cd158955015683e8440c6\
        908d725e0f78081e1f53a3f2f94c9638d3f3af4fded63ce0baa5bd091a6b5fc1\
        c4592e6d46aaa78974efeaa1000e93a665b9367d572377cc35b08b8ae2bc2f06";

    /// Spec §10, "encrypted OUT", password `bee`.
    const ENCRYPTED_OUT: [u8; 14] = [
        0x4c, 0xe0, 0xc9, 0x99, 0x9b, 0x20, 0x89, 0x20, 0x51, 0x66, 0x08, 0x2e, 0xc2, 0xbc,
    ];

    /// The plaintext body of `OUT ("Grüße", 0.001f32)`: signature `11 10 00 00`, varint
    /// `(7 << 1) | 0`, the 7 UTF-8 bytes of "Grüße", float32 0.001 big-endian.
    fn plaintext_out_body() -> Vec<u8> {
        let mut body = vec![0xE0, 0x0E];
        body.extend_from_slice("Grüße".as_bytes());
        body.extend_from_slice(&0.001f32.to_be_bytes());
        body
    }

    #[test]
    fn secret_table_matches_spec_vector() {
        let key = FpeKey::from_password("secret");
        assert_eq!(
            key.enc_table()[..8],
            [0x70, 0x2a, 0x02, 0x11, 0x34, 0xe6, 0xa3, 0x54]
        );
        assert_eq!(key.enc_table()[255], 0x93);
    }

    #[test]
    fn full_tables_match_node_crypto() {
        for (password, table) in [
            ("secret", TABLE_SECRET),
            ("", TABLE_EMPTY),
            ("Grüße", TABLE_GRUESSE),
        ] {
            let key = FpeKey::from_password(password);
            assert_eq!(key.enc_table()[..], hex(table)[..], "password {password:?}");
        }
    }

    #[test]
    fn encrypted_out_vector_decrypts_to_plaintext_out() {
        let plain = plaintext_out_body();
        assert_eq!(plain.len(), 13);
        assert_eq!(plain[2..9], [0x47, 0x72, 0xc3, 0xbc, 0xc3, 0x9f, 0x65]);
        assert_eq!(plain[9..], [0x3a, 0x83, 0x12, 0x6f]);

        let key = FpeKey::from_password("bee");
        let mut msg = ENCRYPTED_OUT;
        // Control byte: VER 01, OP 001 (OUT), E = 1, R = 0, L = 0; never encrypted.
        assert_eq!(msg[0], 0b0100_1100);
        key.decrypt(&mut msg[1..]);
        assert_eq!(msg[0], 0x4c);
        assert_eq!(msg[1..], plain[..]);
    }

    #[test]
    fn encrypted_out_vector_encrypts_from_plaintext_out() {
        let key = FpeKey::from_password("bee");
        let mut msg = vec![0x4c];
        msg.extend_from_slice(&plaintext_out_body());
        key.encrypt(&mut msg[1..]);
        assert_eq!(msg, ENCRYPTED_OUT);
    }

    #[test]
    fn byte_methods_agree_with_slice_methods() {
        let key = FpeKey::from_password("bee");
        for b in 0..=u8::MAX {
            let mut one = [b];
            key.encrypt(&mut one);
            assert_eq!(one[0], key.encrypt_byte(b));
            assert_eq!(key.enc_table()[usize::from(b)], key.encrypt_byte(b));
            key.decrypt(&mut one);
            assert_eq!(one[0], b);
            assert_eq!(key.decrypt_byte(key.encrypt_byte(b)), b);
        }
    }

    #[test]
    fn empty_body_is_untouched() {
        // A message of only a control byte has an empty body: encrypting it changes nothing
        // around it, while the same call on a non-empty body substitutes every byte.
        let key = FpeKey::from_password("secret");
        let mut msg = [0x48, 0x00, 0x07];
        key.encrypt(&mut msg[1..1]);
        key.decrypt(&mut msg[1..1]);
        assert_eq!(msg, [0x48, 0x00, 0x07]);
        key.encrypt(&mut msg[1..]);
        // §10: enc[0] = 0x70, enc[7] = 0x54 for "secret".
        assert_eq!(msg, [0x48, 0x70, 0x54]);
        key.decrypt(&mut msg[1..]);
        assert_eq!(msg, [0x48, 0x00, 0x07]);
    }

    #[test]
    fn batch_path_matches_cbc_encryptor() {
        use aes::cipher::{BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};

        let pw = b"secret";
        let d1 = Md5::digest(pw);
        let d2 = Md5::new().chain_update(d1).chain_update(pw).finalize();
        let iv = Md5::new().chain_update(d2).chain_update(pw).finalize();
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(&d1);
        key[16..].copy_from_slice(&d2);
        let iv: [u8; 16] = iv.into();
        let cipher = Aes256::new(&Array::from(key));

        let mut by_cbc = Vec::new();
        for b in 0..=u8::MAX {
            let mut utf8 = [0u8; 4];
            let p = char::from(b).encode_utf8(&mut utf8).as_bytes();
            let mut buf = [0u8; 16];
            buf[..p.len()].copy_from_slice(p);
            let ct = cbc::Encryptor::<Aes256>::new(&Array::from(key), &Array::from(iv))
                .encrypt_padded::<Pkcs7>(&mut buf, p.len())
                .unwrap();
            assert_eq!(ct.len(), 16);

            let mut block = Array::from(padded_utf8(b));
            for (x, v) in block.iter_mut().zip(iv) {
                *x ^= v;
            }
            cipher.encrypt_block(&mut block);
            assert_eq!(ct, &block[..], "byte {b:#04x}");
            by_cbc.push((ct.to_vec(), b));
        }
        by_cbc.sort();
        let sorted: Vec<u8> = by_cbc.iter().map(|&(_, b)| b).collect();
        assert_eq!(FpeKey::from_password("secret").enc_table()[..], sorted[..]);
    }

    #[test]
    fn debug_does_not_leak_the_table() {
        let key = FpeKey::from_password("secret");
        let shown = format!("{key:?}");
        assert_eq!(shown, "FpeKey { .. }");
        let pretty = format!("{key:#?}");
        assert!(!pretty.contains("112"), "{pretty}"); // enc[0] = 0x70 = 112
        assert!(!pretty.contains("secret"));
    }

    #[test]
    fn clone_has_the_same_tables() {
        let key = FpeKey::from_password("bee");
        let copy = key.clone();
        drop(key);
        assert_eq!(
            copy.enc_table()[..],
            FpeKey::from_password("bee").enc_table()[..]
        );
    }

    #[test]
    fn wipe_zeroizes_the_tables() {
        let mut key = FpeKey::from_password("secret");
        key.wipe(); // what `Drop` runs
        assert!(key.enc.iter().all(|&b| b == 0));
        assert!(key.dec.iter().all(|&b| b == 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn enc_is_a_permutation_and_dec_its_inverse(password in ".{0,24}") {
            let key = FpeKey::from_password(&password);
            let mut seen = [false; 256];
            for &e in key.enc_table() {
                prop_assert!(!seen[usize::from(e)]);
                seen[usize::from(e)] = true;
            }
            for b in 0..=u8::MAX {
                prop_assert_eq!(key.decrypt_byte(key.encrypt_byte(b)), b);
                prop_assert_eq!(key.encrypt_byte(key.decrypt_byte(b)), b);
            }
        }

        #[test]
        fn decrypt_inverts_encrypt(
            password in ".{0,24}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = FpeKey::from_password(&password);
            let mut buf = body.clone();
            key.encrypt(&mut buf);
            prop_assert_eq!(buf.len(), body.len());
            key.decrypt(&mut buf);
            prop_assert_eq!(buf, body);
        }
    }
}
