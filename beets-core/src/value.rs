//! Tuple elements: int16, float32, string and bytes (paper §3, spec wire-v1 §1).
//!
//! BeeTS carries only four kinds of value so that a 4-tuple fits in one BLE advertisement. The
//! wire gives each kind a 2-bit *signature code* ([`TypeCode`]); strings and bytes share code `11`
//! and are told apart by a kind bit in their length varint.
//!
//! Numbers from untyped sources (JSON, JavaScript, the command line) are classified the paper's
//! way by [`Value::number`]: int16 when integral and in range, float32 otherwise. Typed
//! conversions from wider integers never fall back to float32: they fail with
//! [`ValueError::IntOutOfRange`].
//!
//! # Conversions
//!
//! Into [`Value`] (what [`tuple!`](crate::tuple!), [`template!`](crate::template!) and
//! `Tuple::try_from((a, b, …))` use for each element; spec §1):
//!
//! | Rust type | becomes | fails with |
//! |---|---|---|
//! | `i16`, `i8`, `u8` (`From`) | int16 | never |
//! | `i32`, `i64`, `i128`, `isize`, `u16`, `u32`, `u64`, `u128`, `usize` | int16 | [`ValueError::IntOutOfRange`] outside −32768..=32767 (never a float32) |
//! | `f32` | float32, ±inf and −0.0 kept | [`ValueError::NaN`] |
//! | `f64` | the nearest float32 (always float32, never int16), ±inf kept | [`ValueError::NaN`]; [`ValueError::FloatOverflow`] for a finite number beyond ±3.4028235e38 |
//! | `&str`, `String`, `&String`, [`CompactString`] | string (kind 0) | [`ValueError::TooLong`] beyond [`MAX_VALUE_LEN`] bytes |
//! | `&[u8]`, `&[u8; N]`, `Vec<u8>` | bytes (kind 1) | [`ValueError::TooLong`] |
//! | [`Value`] (`From`, unchecked here; `Tuple::new` checks it) | itself | — |
//!
//! Untyped numbers go through [`Value::number`] instead, the classifier of spec §1.
//!
//! Out of [`Value`], for reading a tuple's elements: `i16`, `f32`, `String`, [`CompactString`] and
//! `Vec<u8>` from a `Value`; `i16`, `f32`, `&str` and `&[u8]` from a `&Value`. They fail with
//! [`ValueError::WrongType`] when the value is of another kind (a string is not bytes, an int16
//! is not a float32: spec §3 equality).
//!
//! ```
//! use beets_core::{Value, ValueError};
//! assert_eq!(Value::try_from(512i32)?, Value::Int16(512));
//! assert_eq!(Value::try_from(40000i32), Err(ValueError::IntOutOfRange(40000)));
//! assert_eq!(Value::try_from(0.1f64)?, Value::Float32(0.1f32));
//! let v = Value::try_from("LIGHT")?;
//! assert_eq!(<&str>::try_from(&v)?, "LIGHT");
//! assert!(i16::try_from(&v).is_err());
//! # Ok::<(), ValueError>(())
//! ```

use std::convert::Infallible;
use std::fmt;

pub use compact_str::CompactString;

/// Longest string or byte string a value may hold: 8191 bytes, the largest length a 2-byte varint
/// can carry (spec wire-v1 §1). Transports impose smaller limits on whole messages (31 bytes on
/// BLE, 1221 on UDP).
pub const MAX_VALUE_LEN: usize = (1 << 13) - 1;

/// The 2-bit signature code of a value kind (spec wire-v1 §1–§2).
///
/// Code `00` is not a type: in a tuple it means "no element", in a template an untyped formal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TypeCode {
    /// `01`: a 16-bit two's complement integer.
    Int16 = 0b01,
    /// `10`: an IEEE-754 binary32 float.
    Float32 = 0b10,
    /// `11`: a UTF-8 string or a raw byte string.
    Str = 0b11,
}

impl TypeCode {
    /// The code of a 2-bit field, `None` for `00`. Only the low two bits of `bits` are looked at.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<TypeCode> {
        match bits & 0b11 {
            0b01 => Some(TypeCode::Int16),
            0b10 => Some(TypeCode::Float32),
            0b11 => Some(TypeCode::Str),
            _ => None,
        }
    }

    /// The 2-bit code (1, 2 or 3).
    #[inline]
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// The name used by the text syntax of templates (`?int16`, `?float32`, `?str`).
    pub const fn name(self) -> &'static str {
        match self {
            TypeCode::Int16 => "int16",
            TypeCode::Float32 => "float32",
            TypeCode::Str => "str",
        }
    }
}

impl fmt::Display for TypeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tuple element (paper §3, spec wire-v1 §1).
///
/// Equality follows spec §3: int16 by value, float32 by IEEE equality (so `-0.0 == 0.0`),
/// strings and bytes byte-wise *and of the same kind* (`Str("AB") != Bytes(b"AB")`).
///
/// The variants are public for pattern matching and literal construction, but a value only reaches
/// the wire through [`Tuple::new`](crate::Tuple::new) or
/// [`Template::new`](crate::Template::new), which reject NaN and over-long strings with a
/// [`ValueError`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A signed 16-bit integer (code `01`).
    Int16(i16),
    /// An IEEE-754 binary32 float, never NaN on the wire (code `10`).
    Float32(f32),
    /// A UTF-8 string of at most [`MAX_VALUE_LEN`] bytes (code `11`, kind 0).
    ///
    /// A [`CompactString`]: strings of up to 24 bytes (sensor names, topics, everything that fits
    /// a 31-byte BLE message) are stored inline, so decoding them allocates nothing. It derefs to
    /// `&str` and converts from `&str` and `String` with `.into()`.
    Str(CompactString),
    /// A raw byte string of at most [`MAX_VALUE_LEN`] bytes (code `11`, kind 1).
    Bytes(Vec<u8>),
}

/// Why a value was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The number is NaN; BeeTS has no NaN (spec §1).
    #[error("NaN is not a BeeTS value (spec wire-v1 §1)")]
    NaN,
    /// An infinity was given to the untyped classifier (spec §1 refuses it as input).
    #[error(
        "infinity is refused by the number classifier (spec wire-v1 §1); use Value::Float32 for ±inf"
    )]
    Infinite,
    /// A finite number whose magnitude exceeds the largest float32 (≈ 3.4e38).
    #[error("{0} overflows float32 (largest finite float32 is 3.4028235e38)")]
    FloatOverflow(f64),
    /// An integer outside int16's range −32768..=32767 given to a typed conversion.
    #[error(
        "integer {0} does not fit int16 (-32768..=32767); convert explicitly with Value::number if float32 is meant"
    )]
    IntOutOfRange(i128),
    /// A string or byte string longer than [`MAX_VALUE_LEN`].
    #[error("a string or bytes value holds at most {max} bytes, this one has {len}")]
    TooLong {
        /// Length given, in bytes.
        len: usize,
        /// The limit, [`MAX_VALUE_LEN`].
        max: usize,
    },
    /// A value read as a Rust type of another kind, such as an int16 read as `f32` or a string
    /// read as `Vec<u8>` (the `TryFrom<Value>` and `TryFrom<&Value>` conversions).
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The kind asked for: `"int16"`, `"float32"`, `"string"` or `"bytes"`.
        expected: &'static str,
        /// The kind found, named the same way.
        found: &'static str,
    },
}

/// Lets conversions that cannot fail (`From<i16>`, `From<Value>`, …) share the error type of those
/// that can, so that one `?` or one `TryInto<Value>` bound covers every element type.
impl From<Infallible> for ValueError {
    fn from(never: Infallible) -> ValueError {
        match never {}
    }
}

impl Value {
    /// Classifies an untyped number the paper's way (spec wire-v1 §1): int16 when `x` is integral,
    /// in −32768..=32767 and not −0.0; otherwise the nearest float32.
    ///
    /// # Errors
    /// [`ValueError::NaN`] for NaN, [`ValueError::Infinite`] for ±infinity, and
    /// [`ValueError::FloatOverflow`] for finite numbers beyond float32's range.
    ///
    /// ```
    /// use beets_core::Value;
    /// assert_eq!(Value::number(512.0)?, Value::Int16(512));
    /// assert_eq!(Value::number(1.5)?, Value::Float32(1.5));
    /// assert_eq!(Value::number(40000.0)?, Value::Float32(40000.0));
    /// assert!(Value::number(f64::NAN).is_err());
    /// # Ok::<(), beets_core::ValueError>(())
    /// ```
    pub fn number(x: f64) -> Result<Value, ValueError> {
        if x.is_nan() {
            return Err(ValueError::NaN);
        }
        if x.is_infinite() {
            return Err(ValueError::Infinite);
        }
        let is_neg_zero = x == 0.0 && x.is_sign_negative();
        if x.fract() == 0.0 && (-32768.0..=32767.0).contains(&x) && !is_neg_zero {
            return Ok(Value::Int16(x as i16));
        }
        let f = x as f32;
        if f.is_infinite() {
            return Err(ValueError::FloatOverflow(x));
        }
        Ok(Value::Float32(f))
    }

    /// A float32 value.
    ///
    /// # Errors
    /// [`ValueError::NaN`] for NaN. ±infinity and −0.0 are valid float32 values.
    pub fn float32(x: f32) -> Result<Value, ValueError> {
        if x.is_nan() {
            Err(ValueError::NaN)
        } else {
            Ok(Value::Float32(x))
        }
    }

    /// A string value.
    ///
    /// # Errors
    /// [`ValueError::TooLong`] beyond [`MAX_VALUE_LEN`] bytes.
    pub fn string(s: impl Into<CompactString>) -> Result<Value, ValueError> {
        let s = s.into();
        check_len(s.len())?;
        Ok(Value::Str(s))
    }

    /// A raw byte string value.
    ///
    /// # Errors
    /// [`ValueError::TooLong`] beyond [`MAX_VALUE_LEN`] bytes.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Result<Value, ValueError> {
        let b = b.into();
        check_len(b.len())?;
        Ok(Value::Bytes(b))
    }

    /// The signature code of this value.
    #[inline]
    pub const fn type_code(&self) -> TypeCode {
        match self {
            Value::Int16(_) => TypeCode::Int16,
            Value::Float32(_) => TypeCode::Float32,
            Value::Str(_) | Value::Bytes(_) => TypeCode::Str,
        }
    }

    /// Checks the invariants a value must hold to be sent: no NaN, strings and bytes at most
    /// [`MAX_VALUE_LEN`] bytes.
    ///
    /// # Errors
    /// [`ValueError::NaN`] or [`ValueError::TooLong`].
    pub fn validate(&self) -> Result<(), ValueError> {
        match self {
            Value::Int16(_) => Ok(()),
            Value::Float32(f) if f.is_nan() => Err(ValueError::NaN),
            Value::Float32(_) => Ok(()),
            Value::Str(s) => check_len(s.len()),
            Value::Bytes(b) => check_len(b.len()),
        }
    }

    /// Bytes this value takes on the wire: 2 (int16), 4 (float32), or 1–2 varint bytes plus the
    /// payload (string, bytes).
    #[inline]
    pub fn wire_len(&self) -> usize {
        match self {
            Value::Int16(_) => 2,
            Value::Float32(_) => 4,
            Value::Str(s) => varint_len(s.len()) + s.len(),
            Value::Bytes(b) => varint_len(b.len()) + b.len(),
        }
    }

    /// The integer, if this is an int16.
    pub const fn as_i16(&self) -> Option<i16> {
        match self {
            Value::Int16(i) => Some(*i),
            _ => None,
        }
    }

    /// The float, if this is a float32.
    pub const fn as_f32(&self) -> Option<f32> {
        match self {
            Value::Float32(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is a string (not bytes).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a byte string (not a string).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The kind's name in [`ValueError::WrongType`]: `"int16"`, `"float32"`, `"string"` or
    /// `"bytes"`.
    const fn kind_name(&self) -> &'static str {
        match self {
            Value::Int16(_) => "int16",
            Value::Float32(_) => "float32",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
        }
    }

    fn wrong_type(&self, expected: &'static str) -> ValueError {
        ValueError::WrongType {
            expected,
            found: self.kind_name(),
        }
    }
}

/// Length of the string/bytes header varint for a payload of `len` bytes (1 or 2).
#[inline]
pub(crate) const fn varint_len(len: usize) -> usize {
    if len < 64 { 1 } else { 2 }
}

fn check_len(len: usize) -> Result<(), ValueError> {
    if len > MAX_VALUE_LEN {
        Err(ValueError::TooLong {
            len,
            max: MAX_VALUE_LEN,
        })
    } else {
        Ok(())
    }
}

impl From<i16> for Value {
    fn from(v: i16) -> Value {
        Value::Int16(v)
    }
}

impl From<i8> for Value {
    fn from(v: i8) -> Value {
        Value::Int16(v.into())
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Value {
        Value::Int16(v.into())
    }
}

macro_rules! int_try_from {
    ($($t:ty),*) => {$(
        impl TryFrom<$t> for Value {
            type Error = ValueError;
            /// An int16 value; fails (never becomes float32) when out of range (spec wire-v1 §1).
            fn try_from(v: $t) -> Result<Value, ValueError> {
                i16::try_from(v)
                    .map(Value::Int16)
                    .map_err(|_| ValueError::IntOutOfRange(v as i128))
            }
        }
    )*};
}
int_try_from!(i32, i64, i128, isize, u16, u32, u64, u128, usize);

impl TryFrom<f32> for Value {
    type Error = ValueError;
    /// A float32 value; fails on NaN. ±infinity and −0.0 are valid (spec wire-v1 §1).
    fn try_from(v: f32) -> Result<Value, ValueError> {
        Value::float32(v)
    }
}

impl TryFrom<f64> for Value {
    type Error = ValueError;
    /// A float32 value: the nearest float32 to `v` (ties to even), always float32 even when `v` is
    /// integral (use [`Value::number`] to classify). ±infinity and −0.0 are kept; a finite `v`
    /// too small for float32 rounds to a subnormal or to ±0.0.
    ///
    /// # Errors
    /// [`ValueError::NaN`] for NaN; [`ValueError::FloatOverflow`] for a finite `v` whose nearest
    /// float32 would be infinite (|v| ≥ 3.4028235677973366e38), as in spec §1's classifier.
    fn try_from(v: f64) -> Result<Value, ValueError> {
        if v.is_nan() {
            return Err(ValueError::NaN);
        }
        let f = v as f32;
        if f.is_infinite() && v.is_finite() {
            return Err(ValueError::FloatOverflow(v));
        }
        Ok(Value::Float32(f))
    }
}

impl TryFrom<&str> for Value {
    type Error = ValueError;
    /// A string value; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: &str) -> Result<Value, ValueError> {
        Value::string(v)
    }
}

impl TryFrom<String> for Value {
    type Error = ValueError;
    /// A string value; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: String) -> Result<Value, ValueError> {
        Value::string(v)
    }
}

impl TryFrom<&String> for Value {
    type Error = ValueError;
    /// A string value; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: &String) -> Result<Value, ValueError> {
        Value::string(v.as_str())
    }
}

impl TryFrom<CompactString> for Value {
    type Error = ValueError;
    /// A string value; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: CompactString) -> Result<Value, ValueError> {
        Value::string(v)
    }
}

impl TryFrom<&[u8]> for Value {
    type Error = ValueError;
    /// A byte string value; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: &[u8]) -> Result<Value, ValueError> {
        Value::bytes(v)
    }
}

impl<const N: usize> TryFrom<&[u8; N]> for Value {
    type Error = ValueError;
    /// A byte string value (the type of a `b"…"` literal); fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: &[u8; N]) -> Result<Value, ValueError> {
        Value::bytes(v.as_slice())
    }
}

impl TryFrom<Vec<u8>> for Value {
    type Error = ValueError;
    /// A byte string value, without copying; fails beyond [`MAX_VALUE_LEN`] bytes.
    fn try_from(v: Vec<u8>) -> Result<Value, ValueError> {
        Value::bytes(v)
    }
}

/// Reading a tuple's elements back: `TryFrom<Value>` and `TryFrom<&Value>` for the Rust type of
/// each kind.
macro_rules! value_into {
    ($($t:ty, $variant:ident, $expected:literal, |$x:ident| $get:expr;)*) => {$(
        impl TryFrom<Value> for $t {
            type Error = ValueError;
            #[doc = concat!("The ", $expected, " in `v`.")]
            ///
            /// # Errors
            #[doc = concat!("[`ValueError::WrongType`] unless `v` is a ", $expected, ".")]
            fn try_from(v: Value) -> Result<$t, ValueError> {
                match v {
                    Value::$variant($x) => Ok($get),
                    other => Err(other.wrong_type($expected)),
                }
            }
        }
    )*};
}
value_into! {
    i16, Int16, "int16", |x| x;
    f32, Float32, "float32", |x| x;
    String, Str, "string", |x| x.into_string();
    CompactString, Str, "string", |x| x;
    Vec<u8>, Bytes, "bytes", |x| x;
}

macro_rules! value_ref_into {
    ($($t:ty, $variant:ident, $expected:literal, |$x:ident| $get:expr;)*) => {$(
        impl<'a> TryFrom<&'a Value> for $t {
            type Error = ValueError;
            #[doc = concat!("The ", $expected, " in `v`.")]
            ///
            /// # Errors
            #[doc = concat!("[`ValueError::WrongType`] unless `v` is a ", $expected, ".")]
            fn try_from(v: &'a Value) -> Result<$t, ValueError> {
                match v {
                    Value::$variant($x) => Ok($get),
                    other => Err(other.wrong_type($expected)),
                }
            }
        }
    )*};
}
value_ref_into! {
    i16, Int16, "int16", |x| *x;
    f32, Float32, "float32", |x| *x;
    &'a str, Str, "string", |x| x.as_str();
    &'a [u8], Bytes, "bytes", |x| x.as_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_classifies_integral_in_range_as_int16() {
        assert_eq!(Value::number(0.0), Ok(Value::Int16(0)));
        assert_eq!(Value::number(-32768.0), Ok(Value::Int16(-32768)));
        assert_eq!(Value::number(32767.0), Ok(Value::Int16(32767)));
    }

    #[test]
    fn number_classifies_everything_else_as_float32() {
        assert_eq!(Value::number(32768.0), Ok(Value::Float32(32768.0)));
        assert_eq!(Value::number(-32769.0), Ok(Value::Float32(-32769.0)));
        assert_eq!(Value::number(0.5), Ok(Value::Float32(0.5)));
        let neg_zero = Value::number(-0.0).unwrap();
        match neg_zero {
            Value::Float32(f) => assert!(f == 0.0 && f.is_sign_negative()),
            other => panic!("-0.0 became {other:?}"),
        }
        // Rounded to the nearest float32.
        assert_eq!(Value::number(0.1), Ok(Value::Float32(0.1f32)));
    }

    #[test]
    fn number_rejects_nan_infinity_and_overflow() {
        assert_eq!(Value::number(f64::NAN), Err(ValueError::NaN));
        assert_eq!(Value::number(f64::INFINITY), Err(ValueError::Infinite));
        assert_eq!(Value::number(f64::NEG_INFINITY), Err(ValueError::Infinite));
        assert_eq!(Value::number(1e39), Err(ValueError::FloatOverflow(1e39)));
        assert_eq!(
            Value::number(-1e300),
            Err(ValueError::FloatOverflow(-1e300))
        );
    }

    #[test]
    fn typed_int_conversion_rejects_out_of_range() {
        assert_eq!(Value::try_from(32767i32), Ok(Value::Int16(32767)));
        assert_eq!(
            Value::try_from(32768i32),
            Err(ValueError::IntOutOfRange(32768))
        );
        assert_eq!(
            Value::try_from(u64::MAX),
            Err(ValueError::IntOutOfRange(u64::MAX as i128))
        );
        assert_eq!(
            Value::try_from(65535u16),
            Err(ValueError::IntOutOfRange(65535))
        );
        assert_eq!(Value::from(255u8), Value::Int16(255));
    }

    #[test]
    fn float32_accepts_infinity_and_negative_zero() {
        assert!(Value::float32(f32::INFINITY).is_ok());
        assert!(Value::float32(-0.0).is_ok());
        assert_eq!(Value::float32(f32::NAN), Err(ValueError::NaN));
    }

    #[test]
    fn string_and_bytes_lengths_are_limited() {
        assert!(Value::string("a".repeat(MAX_VALUE_LEN)).is_ok());
        assert_eq!(
            Value::bytes(vec![0; MAX_VALUE_LEN + 1]),
            Err(ValueError::TooLong {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
    }

    #[test]
    fn equality_follows_spec_section_3() {
        assert_eq!(Value::Float32(-0.0), Value::Float32(0.0));
        assert_ne!(Value::Str("AB".into()), Value::Bytes(b"AB".to_vec()));
        assert_ne!(Value::Int16(5), Value::Float32(5.0));
    }

    #[test]
    fn typed_int_conversion_edges() {
        assert_eq!(Value::try_from(32767i32), Ok(Value::Int16(32767)));
        assert_eq!(Value::try_from(-32768i32), Ok(Value::Int16(-32768)));
        assert_eq!(
            Value::try_from(-32769i32),
            Err(ValueError::IntOutOfRange(-32769))
        );
        assert_eq!(
            Value::try_from(i64::MIN),
            Err(ValueError::IntOutOfRange(i64::MIN.into()))
        );
        assert_eq!(Value::try_from(32767u16), Ok(Value::Int16(32767)));
        assert_eq!(
            Value::try_from(32768u16),
            Err(ValueError::IntOutOfRange(32768))
        );
        assert_eq!(Value::try_from(-1isize), Ok(Value::Int16(-1)));
        assert_eq!(
            Value::try_from(usize::MAX),
            Err(ValueError::IntOutOfRange(usize::MAX as i128))
        );
        assert_eq!(Value::from(-128i8), Value::Int16(-128));
        // The error names the value and the range.
        let msg = ValueError::IntOutOfRange(32768).to_string();
        assert!(
            msg.contains("32768") && msg.contains("-32768..=32767"),
            "{msg}"
        );
    }

    fn bits(v: Result<Value, ValueError>) -> u32 {
        match v {
            Ok(Value::Float32(f)) => f.to_bits(),
            other => panic!("not a float32: {other:?}"),
        }
    }

    #[test]
    fn f32_conversion_keeps_infinity_and_negative_zero() {
        assert_eq!(Value::try_from(f32::NAN), Err(ValueError::NaN));
        assert_eq!(Value::try_from(-f32::NAN), Err(ValueError::NaN));
        assert_eq!(bits(Value::try_from(-0.0f32)), (-0.0f32).to_bits());
        assert_eq!(
            bits(Value::try_from(f32::INFINITY)),
            f32::INFINITY.to_bits()
        );
        assert_eq!(
            bits(Value::try_from(f32::NEG_INFINITY)),
            f32::NEG_INFINITY.to_bits()
        );
        assert_eq!(bits(Value::try_from(f32::MAX)), f32::MAX.to_bits());
    }

    #[test]
    fn f64_conversion_is_nearest_float32_and_refuses_nan_and_overflow() {
        assert_eq!(Value::try_from(f64::NAN), Err(ValueError::NaN));
        assert_eq!(Value::try_from(512.0f64), Ok(Value::Float32(512.0)));
        assert_eq!(Value::try_from(0.1f64), Ok(Value::Float32(0.1f32)));
        assert_eq!(bits(Value::try_from(-0.0f64)), (-0.0f32).to_bits());
        assert_eq!(
            bits(Value::try_from(f64::INFINITY)),
            f32::INFINITY.to_bits()
        );
        assert_eq!(
            bits(Value::try_from(f64::NEG_INFINITY)),
            f32::NEG_INFINITY.to_bits()
        );
        assert_eq!(
            Value::try_from(f64::from(f32::MAX)),
            Ok(Value::Float32(f32::MAX))
        );
        assert_eq!(Value::try_from(1e39), Err(ValueError::FloatOverflow(1e39)));
        assert_eq!(
            Value::try_from(-f64::MAX),
            Err(ValueError::FloatOverflow(-f64::MAX))
        );
        // Halfway between f32::MAX and 2^128 rounds (to even) to infinity: refused; just below
        // it rounds to f32::MAX.
        let halfway = f64::from(f32::MAX) + 2f64.powi(103);
        assert_eq!(
            Value::try_from(halfway),
            Err(ValueError::FloatOverflow(halfway))
        );
        let below = f64::from(f32::MAX) + 2f64.powi(102);
        assert_eq!(Value::try_from(below), Ok(Value::Float32(f32::MAX)));
        // Below float32's range: a subnormal or zero, as in the text syntax.
        assert_eq!(Value::try_from(1e-50), Ok(Value::Float32(0.0)));
    }

    #[test]
    fn string_and_bytes_conversions() {
        let s = String::from("LIGHT");
        assert_eq!(Value::try_from(&s), Ok(Value::Str("LIGHT".into())));
        assert_eq!(Value::try_from(s), Ok(Value::Str("LIGHT".into())));
        assert_eq!(
            Value::try_from(CompactString::from("x")),
            Ok(Value::Str("x".into()))
        );
        assert_eq!(Value::try_from(b"AB"), Ok(Value::Bytes(b"AB".to_vec())));
        assert_eq!(Value::try_from(vec![1u8]), Ok(Value::Bytes(vec![1])));
        assert_eq!(Value::try_from(&[0u8; 3][..]), Ok(Value::Bytes(vec![0; 3])));
        assert_eq!(
            Value::try_from(vec![0u8; MAX_VALUE_LEN + 1]),
            Err(ValueError::TooLong {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
        assert!(Value::try_from("é".repeat(4096).as_str()).is_err());
    }

    #[test]
    fn reading_values_back() {
        let (i, f) = (Value::Int16(-7), Value::Float32(-0.0));
        let (s, b) = (Value::Str("AB".into()), Value::Bytes(b"AB".to_vec()));
        assert_eq!(i16::try_from(&i), Ok(-7));
        assert_eq!(i16::try_from(i.clone()), Ok(-7));
        assert_eq!(f32::try_from(&f).map(f32::to_bits), Ok((-0.0f32).to_bits()));
        assert_eq!(f32::try_from(f.clone()), Ok(0.0));
        assert_eq!(<&str>::try_from(&s), Ok("AB"));
        assert_eq!(String::try_from(s.clone()), Ok("AB".to_owned()));
        assert_eq!(CompactString::try_from(s.clone()), Ok("AB".into()));
        assert_eq!(<&[u8]>::try_from(&b), Ok(&b"AB"[..]));
        assert_eq!(Vec::<u8>::try_from(b.clone()), Ok(b"AB".to_vec()));
        // Kinds never convert into each other (spec §3).
        let wrong = |expected, found| ValueError::WrongType { expected, found };
        assert_eq!(i16::try_from(&f), Err(wrong("int16", "float32")));
        assert_eq!(f32::try_from(i), Err(wrong("float32", "int16")));
        assert_eq!(<&str>::try_from(&b), Err(wrong("string", "bytes")));
        assert_eq!(Vec::<u8>::try_from(s), Err(wrong("bytes", "string")));
        assert_eq!(
            wrong("bytes", "string").to_string(),
            "expected bytes, found string"
        );
    }

    #[test]
    fn wire_len_counts_varint() {
        assert_eq!(Value::Str("a".repeat(63).into()).wire_len(), 64);
        assert_eq!(Value::Str("a".repeat(64).into()).wire_len(), 66);
        assert_eq!(Value::Int16(1).wire_len(), 2);
        assert_eq!(Value::Float32(1.0).wire_len(), 4);
    }
}
