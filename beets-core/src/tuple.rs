//! Tuples and templates (paper §3, spec wire-v1 §2–§3).
//!
//! A [`Tuple`] is an ordered list of 1 to 4 [`Value`]s. A [`Template`] (the paper's *pattern*)
//! has the same arity range; each position is an *actual* (a value that must be equal) or a
//! *formal* (a wildcard, typed or untyped). [`Template::matches`] is the Linda matching rule of
//! spec §3.
//!
//! Both types are checked at construction (arity, no NaN, string lengths), so every `Tuple` and
//! `Template` that exists can be encoded; the only remaining limit is the transport's message size.

use std::fmt;

use arrayvec::ArrayVec;

use crate::value::{TypeCode, Value, ValueError};

/// Largest arity of a tuple or template: 4 (paper §3: sub-spaces ts1..ts4).
pub const MAX_ARITY: usize = 4;

/// Why a tuple or template could not be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TupleError {
    /// Arity outside 1..=4.
    #[error("arity {0} is outside 1..=4 (a BeeTS tuple or template has 1 to 4 elements)")]
    BadArity(usize),
    /// An element was refused.
    #[error("element {index}: {source}")]
    Value {
        /// Position of the element (0-based).
        index: usize,
        /// Why it was refused.
        #[source]
        source: ValueError,
    },
}

/// A tuple of arity 1..=4 (paper §3, spec wire-v1 §2).
///
/// ```
/// use beets_core::{Tuple, Value};
/// let t = Tuple::new([Value::Str("SENSOR".into()), Value::Int16(512)])?;
/// assert_eq!(t.arity(), 2);
/// assert_eq!(t.to_string(), r#"("SENSOR", 512)"#);
/// # Ok::<(), beets_core::TupleError>(())
/// ```
///
/// Three more ways to build one: the [`tuple!`](crate::tuple!) macro, the text syntax
/// ([`text`](crate::text)), and `TryFrom` a Rust tuple of 1 to 4 elements, each converted with
/// `TryInto<Value>` (typed: an `i32` that does not fit int16 is an error, spec §1):
///
/// ```
/// use beets_core::{Tuple, TupleError, ValueError};
/// let t = Tuple::try_from(("SENSOR", "LIGHT", 512i16, 1.5f32))?;
/// assert_eq!(t.to_string(), r#"("SENSOR", "LIGHT", 512, 1.5)"#);
/// assert_eq!(t.signature(), 0xf6);
/// let lux: i32 = 40000;
/// assert_eq!(
///     Tuple::try_from(("LUX", lux)),
///     Err(TupleError::Value { index: 1, source: ValueError::IntOutOfRange(40000) })
/// );
/// # Ok::<(), TupleError>(())
/// ```
#[derive(Clone)]
pub struct Tuple {
    values: ArrayVec<Value, MAX_ARITY>,
    /// [`Tuple::signature`], kept current by [`Tuple::push_checked`] (the only way values get
    /// in), so that encoding a message reads it instead of walking the values again.
    signature: u8,
    /// [`Tuple::wire_len`], kept current likewise; at most 1 + 4 · (2 + 8191), so a `u16`.
    wire_len: u16,
}

impl Tuple {
    /// Builds a tuple from 1 to 4 values.
    ///
    /// # Errors
    /// [`TupleError::BadArity`] for 0 or more than 4 values; [`TupleError::Value`] for a NaN
    /// float or a string/bytes value over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes.
    pub fn new(values: impl IntoIterator<Item = Value>) -> Result<Tuple, TupleError> {
        let mut out = Tuple::empty();
        for (index, v) in values.into_iter().enumerate() {
            v.validate()
                .map_err(|source| TupleError::Value { index, source })?;
            if out.values.is_full() {
                return Err(TupleError::BadArity(index + 1));
            }
            out.push_checked(v);
        }
        if out.values.is_empty() {
            return Err(TupleError::BadArity(0));
        }
        Ok(out)
    }

    /// A tuple without values, for the decoder to fill in place with
    /// [`push_checked`](Self::push_checked): decoding straight into the message it returns
    /// saves moving the 136-byte tuple. Not a valid tuple (arity 0) until a value is pushed; it
    /// never leaves the crate empty.
    #[inline]
    pub(crate) fn empty() -> Tuple {
        Tuple {
            values: ArrayVec::new(),
            signature: 0,
            wire_len: 1,
        }
    }

    /// Appends a value the caller has checked ([`Value::validate`]) to a tuple of fewer than 4.
    ///
    /// # Panics
    /// If the tuple already has 4 values.
    #[inline]
    pub(crate) fn push_checked(&mut self, v: Value) {
        debug_assert!(v.validate().is_ok());
        let (i, code, len) = (self.values.len(), v.type_code(), v.wire_len());
        self.values.push(v); // panics when full, before `i` is used
        self.signature |= code.bits() << (6 - 2 * i);
        // ≤ 8193 bytes per value, ≤ 4 values: no overflow.
        self.wire_len += len as u16;
    }

    /// The decoder's fast path: appends a value it read from the wire under a signature it has
    /// checked, leaving the caches to [`set_wire`](Self::set_wire) once all values are in.
    ///
    /// # Panics
    /// If the tuple already has 4 values.
    #[inline(always)]
    pub(crate) fn push_decoded(&mut self, v: Value) {
        self.values.push(v);
    }

    /// Sets the caches after [`push_decoded`](Self::push_decoded): the signature byte the values
    /// were read under and the bytes they took on the wire (signature byte included).
    #[inline(always)]
    pub(crate) fn set_wire(&mut self, signature: u8, wire_len: u16) {
        debug_assert_eq!(
            self.values
                .iter()
                .enumerate()
                .fold(0, |s, (i, v)| s | v.type_code().bits() << (6 - 2 * i)),
            signature
        );
        debug_assert_eq!(
            1 + self.values.iter().map(Value::wire_len).sum::<usize>(),
            usize::from(wire_len)
        );
        self.signature = signature;
        self.wire_len = wire_len;
    }

    /// Number of elements, 1..=4.
    #[inline]
    pub fn arity(&self) -> usize {
        self.values.len()
    }

    /// The elements in order.
    #[inline]
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// The element at `index`, if any.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Value> {
        self.values.get(index)
    }

    /// The tuple's signature byte (spec §2): element i's code in bits `7-2i..6-2i`.
    #[inline]
    pub fn signature(&self) -> u8 {
        self.signature
    }

    /// Bytes the tuple takes on the wire: signature byte plus the values.
    #[inline]
    pub fn wire_len(&self) -> usize {
        usize::from(self.wire_len)
    }

    /// Consumes the tuple, giving its values.
    pub fn into_values(self) -> Vec<Value> {
        self.values.into_iter().collect()
    }
}

/// Equal values (spec §3); the cached signature and length follow from them.
impl PartialEq for Tuple {
    fn eq(&self, other: &Tuple) -> bool {
        self.values == other.values
    }
}

/// As derived before the caches were added: `Tuple { values: [..] }`.
impl fmt::Debug for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tuple")
            .field("values", &self.values)
            .finish()
    }
}

impl<'a> IntoIterator for &'a Tuple {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;
    fn into_iter(self) -> Self::IntoIter {
        self.values.iter()
    }
}

/// `Tuple::try_from((a, b, …))` for Rust tuples of 1 to 4 elements, each converted with
/// `TryInto<Value>` (the conversions listed in [`value`](crate::value#conversions)).
macro_rules! tuple_try_from {
    ($(($($T:ident $x:ident $i:tt),+))*) => {$(
        impl<$($T),+> TryFrom<($($T,)+)> for Tuple
        where
            $($T: TryInto<Value>, ValueError: From<$T::Error>,)+
        {
            type Error = TupleError;

            /// Converts each element to a [`Value`] (spec wire-v1 §1): integers to int16, floats to
            /// float32, strings to strings, byte slices and vectors to bytes.
            ///
            /// # Errors
            /// [`TupleError::Value`] with the position of the first element that does not
            /// convert: an integer outside −32768..=32767, a NaN, a float64 beyond float32's
            /// range, a string or bytes over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes.
            fn try_from(($($x,)+): ($($T,)+)) -> Result<Tuple, TupleError> {
                let mut out = Tuple::empty();
                $(
                    let v = $x
                        .try_into()
                        .map_err(ValueError::from)
                        .and_then(|v: Value| v.validate().map(|()| v))
                        .map_err(|source| TupleError::Value { index: $i, source })?;
                    out.push_checked(v);
                )+
                Ok(out)
            }
        }
    )*};
}
tuple_try_from! {
    (A a 0)
    (A a 0, B b 1)
    (A a 0, B b 1, C c 2)
    (A a 0, B b 1, C c 2, D d 3)
}

/// One position of a [`Template`] (spec wire-v1 §3).
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// An actual: the tuple's value must have the same code and be equal.
    Actual(Value),
    /// A formal (wildcard). `None` matches any value (untyped formal, `?`); `Some(code)` matches
    /// any value of that code (`?int16`, `?float32`, `?str` — the last also matches bytes).
    Formal(Option<TypeCode>),
}

impl Field {
    /// An untyped formal: matches any value.
    pub const ANY: Field = Field::Formal(None);

    /// Whether this field accepts `v` (spec §3).
    #[inline]
    pub fn matches(&self, v: &Value) -> bool {
        match self {
            Field::Actual(a) => a == v,
            Field::Formal(None) => true,
            Field::Formal(Some(code)) => v.type_code() == *code,
        }
    }

    /// The 2-bit code this field puts in a pattern's signature byte (0 for an untyped formal).
    #[inline]
    pub fn code_bits(&self) -> u8 {
        match self {
            Field::Actual(v) => v.type_code().bits(),
            Field::Formal(None) => 0,
            Field::Formal(Some(c)) => c.bits(),
        }
    }
}

impl From<Value> for Field {
    fn from(v: Value) -> Field {
        Field::Actual(v)
    }
}

/// A template (the paper's *pattern*) of arity 1..=4 (spec wire-v1 §3).
///
/// ```
/// use beets_core::{Field, Template, Tuple, TypeCode, Value};
/// let tpl = Template::new([
///     Field::Actual(Value::Str("SENSOR".into())),
///     Field::Formal(Some(TypeCode::Int16)),
/// ])?;
/// let t: Tuple = r#"("SENSOR", 7)"#.parse().unwrap();
/// assert!(tpl.matches(&t));
/// assert!(!tpl.matches(&r#"("SENSOR", 7.0)"#.parse().unwrap()));
/// # Ok::<(), beets_core::TupleError>(())
/// ```
#[derive(Clone)]
pub struct Template {
    fields: ArrayVec<Field, MAX_ARITY>,
    /// [`Template::signature`], kept current by [`Template::push_checked`] (see [`Tuple`]).
    signature: u8,
    /// The formal mask of [`Template::pattern_byte`] (bit `3-i` set ⇔ position i is a formal).
    formal_mask: u8,
    /// [`Template::wire_len`].
    wire_len: u16,
}

impl Template {
    /// Builds a template from 1 to 4 fields.
    ///
    /// # Errors
    /// [`TupleError::BadArity`] for 0 or more than 4 fields; [`TupleError::Value`] for an actual
    /// that is NaN or a string/bytes value over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes.
    pub fn new(fields: impl IntoIterator<Item = Field>) -> Result<Template, TupleError> {
        let mut out = Template::empty();
        for (index, f) in fields.into_iter().enumerate() {
            if let Field::Actual(v) = &f {
                v.validate()
                    .map_err(|source| TupleError::Value { index, source })?;
            }
            if out.fields.is_full() {
                return Err(TupleError::BadArity(index + 1));
            }
            out.push_checked(f);
        }
        if out.fields.is_empty() {
            return Err(TupleError::BadArity(0));
        }
        Ok(out)
    }

    /// A template without fields, for the decoder to fill in place (see [`Tuple::empty`]).
    #[inline]
    pub(crate) fn empty() -> Template {
        Template {
            fields: ArrayVec::new(),
            signature: 0,
            formal_mask: 0,
            wire_len: 2,
        }
    }

    /// Appends a field whose actual value the caller has checked to a template of fewer than 4.
    ///
    /// # Panics
    /// If the template already has 4 fields.
    #[inline]
    pub(crate) fn push_checked(&mut self, f: Field) {
        let (i, code) = (self.fields.len(), f.code_bits());
        let len = match &f {
            Field::Actual(v) => {
                debug_assert!(v.validate().is_ok());
                Some(v.wire_len())
            }
            Field::Formal(_) => None,
        };
        self.fields.push(f); // panics when full, before `i` is used
        self.signature |= code << (6 - 2 * i);
        match len {
            // ≤ 8193 bytes per value, ≤ 4 values: no overflow.
            Some(len) => self.wire_len += len as u16,
            None => self.formal_mask |= 1 << (3 - i),
        }
    }

    /// A template that matches exactly `tuple` (every position an actual).
    pub fn exact(tuple: &Tuple) -> Template {
        let mut out = Template::empty();
        for v in tuple {
            out.push_checked(Field::Actual(v.clone()));
        }
        out
    }

    /// Number of positions, 1..=4.
    #[inline]
    pub fn arity(&self) -> usize {
        self.fields.len()
    }

    /// The positions in order.
    #[inline]
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Whether `tuple` matches (spec §3): same arity, every actual equal with the same code, every
    /// typed formal of the value's code. Cost: O(arity) value comparisons.
    #[inline]
    pub fn matches(&self, tuple: &Tuple) -> bool {
        self.fields.len() == tuple.arity()
            && self
                .fields
                .iter()
                .zip(tuple.values())
                .all(|(f, v)| f.matches(v))
    }

    /// The pattern's signature byte (spec §3): actual and typed-formal codes, `00` for untyped
    /// formals and unused positions.
    #[inline]
    pub fn signature(&self) -> u8 {
        self.signature
    }

    /// The pattern byte (spec §3): arity in bits 7..4, formal mask in bits 3..0 (bit `3-i` set ⇔
    /// position i is a formal).
    #[inline]
    pub fn pattern_byte(&self) -> u8 {
        ((self.fields.len() as u8) << 4) | self.formal_mask
    }

    /// Bytes the template takes on the wire: signature, pattern byte, the actuals' values.
    #[inline]
    pub fn wire_len(&self) -> usize {
        usize::from(self.wire_len)
    }

    /// The first field's value when it is an actual (what a space indexes by).
    #[inline]
    pub fn first_actual(&self) -> Option<&Value> {
        match self.fields.first() {
            Some(Field::Actual(v)) => Some(v),
            _ => None,
        }
    }
}

/// Equal fields; the cached signature, pattern byte and length follow from them.
impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.fields == other.fields
    }
}

/// As derived before the caches were added: `Template { fields: [..] }`.
impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("fields", &self.fields)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn tuple_arity_is_one_to_four() {
        assert_eq!(Tuple::new([]), Err(TupleError::BadArity(0)));
        assert!(Tuple::new([Value::Int16(1)]).is_ok());
        assert!(Tuple::new((0..4).map(Value::Int16)).is_ok());
        assert_eq!(
            Tuple::new((0..5).map(Value::Int16)),
            Err(TupleError::BadArity(5))
        );
        assert_eq!(Template::new([]), Err(TupleError::BadArity(0)));
        assert_eq!(
            Template::new((0..5).map(|_| Field::ANY)),
            Err(TupleError::BadArity(5))
        );
    }

    #[test]
    fn tuple_rejects_nan_element() {
        assert_eq!(
            Tuple::new([Value::Int16(1), Value::Float32(f32::NAN)]),
            Err(TupleError::Value {
                index: 1,
                source: ValueError::NaN
            })
        );
        assert!(Template::new([Field::Actual(Value::Float32(f32::NAN))]).is_err());
    }

    /// The cached signature, pattern byte and length, recomputed from the elements.
    fn check_caches_tuple(t: &Tuple) {
        let sig = t
            .values()
            .iter()
            .enumerate()
            .fold(0u8, |s, (i, v)| s | (v.type_code().bits() << (6 - 2 * i)));
        assert_eq!(t.signature(), sig, "{t:?}");
        let len = 1 + t.values().iter().map(Value::wire_len).sum::<usize>();
        assert_eq!(t.wire_len(), len, "{t:?}");
    }

    fn check_caches_template(p: &Template) {
        let fields = p.fields().iter().enumerate();
        let sig = fields
            .clone()
            .fold(0u8, |s, (i, f)| s | (f.code_bits() << (6 - 2 * i)));
        let mask = fields.fold(0u8, |m, (i, f)| match f {
            Field::Formal(_) => m | (1 << (3 - i)),
            Field::Actual(_) => m,
        });
        let len = p
            .fields()
            .iter()
            .map(|f| match f {
                Field::Actual(v) => v.wire_len(),
                Field::Formal(_) => 0,
            })
            .sum::<usize>();
        assert_eq!(p.signature(), sig, "{p:?}");
        assert_eq!(p.pattern_byte(), ((p.arity() as u8) << 4) | mask, "{p:?}");
        assert_eq!(p.wire_len(), 2 + len, "{p:?}");
    }

    #[test]
    fn cached_signature_and_length_follow_the_elements() {
        let values = [
            Value::Int16(-1),
            Value::Float32(2.5),
            s(""),
            s(&"x".repeat(64)),
            Value::Bytes(vec![0; 63]),
        ];
        for a in &values {
            for b in &values {
                for n in 1..=4 {
                    let four = [a, b, a, b];
                    let elems = four[..n].iter().map(|v| (*v).clone());
                    let t = Tuple::new(elems.clone()).unwrap();
                    check_caches_tuple(&t);
                    check_caches_template(&Template::exact(&t));
                    let mixed = elems.enumerate().map(|(i, v)| match i % 3 {
                        0 => Field::Actual(v),
                        1 => Field::ANY,
                        _ => Field::Formal(Some(v.type_code())),
                    });
                    check_caches_template(&Template::new(mixed).unwrap());
                }
            }
        }
    }

    #[test]
    fn equality_and_debug_ignore_the_caches() {
        let t = Tuple::new([Value::Float32(-0.0)]).unwrap();
        assert_eq!(t, Tuple::new([Value::Float32(0.0)]).unwrap());
        assert_eq!(format!("{t:?}"), "Tuple { values: [Float32(-0.0)] }");
        let p = Template::new([Field::ANY]).unwrap();
        assert_eq!(format!("{p:?}"), "Template { fields: [Formal(None)] }");
    }

    #[test]
    fn signature_matches_spec_vector() {
        let t = Tuple::new([
            s("SENSOR"),
            s("LIGHT"),
            Value::Int16(512),
            Value::Float32(1.5),
        ])
        .unwrap();
        assert_eq!(t.signature(), 0xf6);
        let p = Template::new([
            Field::Actual(s("SENSOR")),
            Field::Actual(s("LIGHT")),
            Field::ANY,
            Field::ANY,
        ])
        .unwrap();
        assert_eq!(p.signature(), 0xf0);
        assert_eq!(p.pattern_byte(), 0x43);
        let q = Template::new([Field::ANY, Field::ANY]).unwrap();
        assert_eq!((q.signature(), q.pattern_byte()), (0x00, 0x2c));
    }

    #[test]
    fn matching_follows_spec_section_3() {
        let t = Tuple::new([s("A"), Value::Int16(5), Value::Bytes(b"AB".to_vec())]).unwrap();
        let m = |fields: Vec<Field>| Template::new(fields).unwrap().matches(&t);
        assert!(m(vec![Field::Actual(s("A")), Field::ANY, Field::ANY]));
        assert!(m(vec![
            Field::ANY,
            Field::Formal(Some(TypeCode::Int16)),
            Field::Formal(Some(TypeCode::Str))
        ]));
        // Arity must agree.
        assert!(!m(vec![Field::Actual(s("A")), Field::ANY]));
        // int16 5 is not float32 5.0, neither as actual nor as typed formal.
        assert!(!m(vec![
            Field::ANY,
            Field::Actual(Value::Float32(5.0)),
            Field::ANY
        ]));
        assert!(!m(vec![
            Field::ANY,
            Field::Formal(Some(TypeCode::Float32)),
            Field::ANY
        ]));
        // Bytes are not strings.
        assert!(!m(vec![Field::ANY, Field::ANY, Field::Actual(s("AB"))]));
        assert!(m(vec![
            Field::ANY,
            Field::ANY,
            Field::Actual(Value::Bytes(b"AB".to_vec()))
        ]));
    }

    #[test]
    fn float_actual_matches_negative_zero() {
        let t = Tuple::new([Value::Float32(-0.0)]).unwrap();
        assert!(
            Template::new([Field::Actual(Value::Float32(0.0))])
                .unwrap()
                .matches(&t)
        );
    }

    #[test]
    fn try_from_rust_tuples_of_one_to_four() {
        assert_eq!(Tuple::try_from((7i16,)), Tuple::new([Value::Int16(7)]));
        assert_eq!(
            Tuple::try_from(("A", 2.5f32)),
            Tuple::new([s("A"), Value::Float32(2.5)])
        );
        assert_eq!(
            Tuple::try_from((String::from("A"), b"AB", -1i64)),
            Tuple::new([s("A"), Value::Bytes(b"AB".to_vec()), Value::Int16(-1)])
        );
        let t = Tuple::try_from(("SENSOR", "LIGHT", 512u16, 1.5f64)).unwrap();
        assert_eq!(t.signature(), 0xf6);
        check_caches_tuple(&t);
        // A `Value` element is checked like any other.
        assert_eq!(
            Tuple::try_from((Value::Int16(1), Value::Float32(f32::NAN))),
            Err(TupleError::Value {
                index: 1,
                source: ValueError::NaN
            })
        );
        // The first failing element is reported.
        assert_eq!(
            Tuple::try_from((1u8, 2i8, 32768i32, f32::NAN)),
            Err(TupleError::Value {
                index: 2,
                source: ValueError::IntOutOfRange(32768)
            })
        );
    }

    #[test]
    fn exact_template_matches_its_tuple() {
        let t = Tuple::new([s("X"), Value::Float32(2.5)]).unwrap();
        let p = Template::exact(&t);
        assert!(p.matches(&t));
        assert_eq!(p.pattern_byte(), 0x20);
        assert_eq!(p.first_actual(), Some(&s("X")));
    }
}
