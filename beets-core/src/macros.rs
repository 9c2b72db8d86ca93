//! The [`tuple!`](crate::tuple!) and [`template!`](crate::template!) macros (spec wire-v1 §1–§3).
//!
//! Both expand to a call of the hidden [`__private`] helpers, so the only names they need from the
//! caller's crate are `beets_core` (through `$crate`) and `::core`.

/// Builds a [`Tuple`](crate::Tuple) of 1 to 4 elements (spec wire-v1 §2):
/// `tuple!("SENSOR", "LIGHT", 512, 1.5)`.
///
/// It always returns `Result<Tuple, TupleError>`, so it is written the same way whatever the
/// elements are: `tuple!(…)?`, like [`Tuple::new`](crate::Tuple::new) and the text syntax. What
/// can be proved at compile time is checked at compile time; the `Result` carries the checks that
/// only run time can make.
///
/// | element | becomes (spec §1) | checked |
/// |---|---|---|
/// | integer literal: `512`, `-32768`, `0x7fff` | int16 | **compile time**: outside −32768..=32767 it does not compile |
/// | float literal: `1.5`, `-0.0`, `2e3` | float32 (nearest) | **compile time**: beyond float32's range it does not compile |
/// | string literal: `"LIGHT"` | string | run time: at most [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes |
/// | byte string literal: `b"\x01\x02"` | bytes | run time: length, as above |
/// | any other expression | [`TryInto<Value>`](crate::value#conversions): `i16`, `i32`, …, `f32`, `f64`, `&str`, `String`, `&[u8]`, `Vec<u8>`, [`Value`](crate::Value) | run time: `i32` 40000 is [`ValueError::IntOutOfRange`](crate::ValueError::IntOutOfRange), NaN is [`ValueError::NaN`](crate::ValueError::NaN), … |
///
/// Literals follow the text syntax ([`text`](crate::text)): an integer literal is an int16 and a
/// float literal a float32, never the other way round (`512.0` is float32). The range check of
/// literals is rustc's `overflowing_literals` lint, which the macro denies for its elements even
/// where the calling crate allows it. A literal with a suffix other than `i16` or `f32` (`5u8`,
/// `5i32`, `1.5f64`), a `bool` or a `char` literal does not compile: BeeTS has no such values;
/// write a typed number as an expression (a variable, `u8::MAX`, `x as i32`) and it goes through
/// `TryFrom` at run time. Arity 0 and arity 5 or more do not compile either, and neither does a
/// formal (`?`): formals belong to [`template!`](crate::template!).
///
/// Every element expression is evaluated, left to right, before the tuple is built.
///
/// # Errors
/// [`TupleError::Value`](crate::TupleError::Value) with the position (0-based) of the first
/// element that is refused: an expression outside int16's range, a NaN, a float64 beyond
/// float32's range, a string or bytes over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes. Never
/// [`TupleError::BadArity`](crate::TupleError::BadArity): arity is checked at compile time.
///
/// # Examples
///
/// ```
/// use beets_core::{Tuple, TupleError, Value, ValueError, tuple};
/// let t = tuple!("SENSOR", "LIGHT", 512, 1.5)?;
/// assert_eq!(t, r#"("SENSOR", "LIGHT", 512, 1.5)"#.parse::<Tuple>().unwrap());
/// assert_eq!(t.signature(), 0xf6); // spec §2's example
///
/// // Expressions go through TryInto<Value>: typed, never silently a float32.
/// let (lux, name) = (40000i32, String::from("LUX"));
/// assert_eq!(
///     tuple!(name, lux),
///     Err(TupleError::Value { index: 1, source: ValueError::IntOutOfRange(40000) })
/// );
/// assert_eq!(tuple!(b"\x01\x02", 0.5f64 * 3.0)?.values(), [
///     Value::Bytes(vec![1, 2]),
///     Value::Float32(1.5),
/// ]);
/// # Ok::<(), TupleError>(())
/// ```
///
/// The path `beets_core::tuple!` works without an import (and so does `beets::core::tuple!`
/// through the facade crate, which re-exports `beets_core` as `core`):
///
/// ```
/// let t = beets_core::tuple!(-32768, -0.0, "")?;
/// assert_eq!(t.to_string(), r#"(-32768, -0.0, "")"#);
/// # Ok::<(), beets_core::TupleError>(())
/// ```
///
/// An integer literal outside int16's range does not compile (spec §1: never silently a
/// float32), even where `overflowing_literals` is allowed:
///
/// ```compile_fail
/// #![allow(overflowing_literals)]
/// let t = beets_core::tuple!("LUX", 40000);
/// ```
///
/// Nor does a float literal beyond float32's range:
///
/// ```compile_fail
/// let t = beets_core::tuple!(1e39);
/// ```
///
/// Nor a tuple of 5 elements (spec §2: arity 1..=4):
///
/// ```compile_fail
/// let t = beets_core::tuple!(1, 2, 3, 4, 5);
/// ```
///
/// Nor an empty one:
///
/// ```compile_fail
/// let t = beets_core::tuple!();
/// ```
///
/// Nor a formal:
///
/// ```compile_fail
/// let t = beets_core::tuple!("SENSOR", ?);
/// ```
#[macro_export]
macro_rules! tuple {
    () => {
        ::core::compile_error!("tuple! takes 1 to 4 elements (spec wire-v1 §2), this one has none")
    };
    ($($elements:tt)+) => {
        $crate::__beets_elements!(tuple [] $($elements)+)
    };
}

/// Builds a [`Template`](crate::Template) of 1 to 4 positions (spec wire-v1 §3):
/// `template!("SENSOR", ?, ?int16, ?float32)`.
///
/// A position is an *actual*, written and checked exactly like an element of
/// [`tuple!`](crate::tuple!) (literals checked at compile time, other expressions through
/// `TryInto<Value>` at run time), or a *formal*, written as in the text syntax:
///
/// | position | matches | [`Field`](crate::Field) |
/// |---|---|---|
/// | `?` | any value | `Formal(None)` |
/// | `?int16` | an int16 | `Formal(Some(TypeCode::Int16))` |
/// | `?float32` | a float32 | `Formal(Some(TypeCode::Float32))` |
/// | `?str` | a string **or** bytes (code `11`) | `Formal(Some(TypeCode::Str))` |
///
/// It always returns `Result<Template, TupleError>`. Arity 0, arity 5 or more, another `?name`
/// and the literals [`tuple!`](crate::tuple!) refuses do not compile.
///
/// # Errors
/// [`TupleError::Value`](crate::TupleError::Value) with the position of the first actual that is
/// refused, as for [`tuple!`](crate::tuple!).
///
/// # Examples
///
/// ```
/// use beets_core::{Template, TupleError, template, tuple};
/// let p = template!("SENSOR", "LIGHT", ?, ?float32)?;
/// assert_eq!(p, r#"("SENSOR", "LIGHT", ?, ?float32)"#.parse::<Template>().unwrap());
/// assert!(p.matches(&tuple!("SENSOR", "LIGHT", 512, 1.5)?));
/// assert!(!p.matches(&tuple!("SENSOR", "LIGHT", 512, 2)?)); // 2 is an int16
///
/// // spec §3's examples
/// let p = template!("SENSOR", "LIGHT", ?, ?)?;
/// assert_eq!((p.signature(), p.pattern_byte()), (0xf0, 0x43));
/// let p = beets_core::template!("SENSOR", ?int16)?;
/// assert_eq!((p.signature(), p.pattern_byte()), (0xd0, 0x24));
///
/// // Actuals may be expressions.
/// let topic = "LIGHT".to_owned();
/// assert!(template!(?str, topic, ?)?.matches(&tuple!(b"id", "LIGHT", 7)?));
/// # Ok::<(), TupleError>(())
/// ```
///
/// Five positions do not compile (spec §3: arity 1..=4):
///
/// ```compile_fail
/// let p = beets_core::template!(?, ?, ?, ?, ?);
/// ```
///
/// Nor does a typed formal BeeTS does not have:
///
/// ```compile_fail
/// let p = beets_core::template!("SENSOR", ?int32);
/// ```
///
/// Nor an out-of-range actual literal:
///
/// ```compile_fail
/// let p = beets_core::template!("SENSOR", -32769);
/// ```
#[macro_export]
macro_rules! template {
    () => {
        ::core::compile_error!(
            "template! takes 1 to 4 positions (spec wire-v1 §3), this one has none"
        )
    };
    ($($elements:tt)+) => {
        $crate::__beets_elements!(template [] $($elements)+)
    };
}

/// The element muncher behind [`tuple!`] and [`template!`]: turns one element at a time into an
/// expression of the element's result, in `[acc…]`, then calls `__private::$kind::build`.
#[doc(hidden)]
#[macro_export]
macro_rules! __beets_elements {
    // A fifth element: stop before munching the rest.
    ($kind:ident [$a:expr, $b:expr, $c:expr, $d:expr,] $($rest:tt)+) => {
        ::core::compile_error!(::core::concat!(
            ::core::stringify!($kind),
            "! takes 1 to 4 elements (spec wire-v1 §2–§3), this one has more than 4"
        ))
    };
    // All elements munched.
    ($kind:ident [$($acc:expr,)+]) => {
        $crate::__private::$kind::build([$($acc),+])
    };
    // Formals.
    (tuple [$($acc:expr,)*] ? $($rest:tt)*) => {
        ::core::compile_error!(
            "a formal (`?`) is a template position: use template!, tuple! takes values only"
        )
    };
    (template [$($acc:expr,)*] ? int16 $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!(template [
            $($acc,)* $crate::__private::template::typed($crate::TypeCode::Int16),
        ] $($($rest)*)?)
    };
    (template [$($acc:expr,)*] ? float32 $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!(template [
            $($acc,)* $crate::__private::template::typed($crate::TypeCode::Float32),
        ] $($($rest)*)?)
    };
    (template [$($acc:expr,)*] ? str $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!(template [
            $($acc,)* $crate::__private::template::typed($crate::TypeCode::Str),
        ] $($($rest)*)?)
    };
    (template [$($acc:expr,)*] ? $other:ident $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown typed formal `?",
            ::core::stringify!($other),
            "`: BeeTS has ?int16, ?float32 and ?str (which also matches bytes), or `?` for any value"
        ))
    };
    (template [$($acc:expr,)*] ? $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!(template [
            $($acc,)* $crate::__private::template::any(),
        ] $($($rest)*)?)
    };
    // A literal on its own: typed by the literal's form, range-checked by rustc.
    ($kind:ident [$($acc:expr,)*] $x:literal $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!($kind [
            $($acc,)* {
                #[deny(overflowing_literals)]
                let element = $crate::__private::$kind::literal($x);
                element
            },
        ] $($($rest)*)?)
    };
    // Any other expression: TryInto<Value>.
    ($kind:ident [$($acc:expr,)*] $x:expr $(, $($rest:tt)*)?) => {
        $crate::__beets_elements!($kind [
            $($acc,)* $crate::__private::$kind::expr($x),
        ] $($($rest)*)?)
    };
}

/// Helpers the macros expand to. Not part of the API: names and signatures may change in any
/// release.
#[doc(hidden)]
pub mod __private {
    use crate::tuple::{Field, MAX_ARITY, Template, Tuple, TupleError};
    use crate::value::{TypeCode, Value, ValueError};

    /// The Rust types a literal element may have. Exactly one integer type and one float type
    /// implement it, so that rustc infers `512` as `i16` and `1.5` as `f32` (and then checks their
    /// range) instead of falling back to `i32` and `f64`.
    #[diagnostic::on_unimplemented(
        message = "a `{Self}` literal is not a BeeTS value",
        label = "not an int16, float32, string or bytes literal",
        note = "literals in tuple!/template! are int16 (`512`, `5i16`), float32 (`1.5`, `1.5f32`), \
                strings (`\"x\"`) or bytes (`b\"x\"`); write other numbers as expressions \
                (a variable, `x as i32`) to convert them with TryFrom at run time"
    )]
    pub trait Literal {
        /// The value, checked.
        fn into_value(self) -> Result<Value, ValueError>;
    }

    impl Literal for i16 {
        fn into_value(self) -> Result<Value, ValueError> {
            Ok(Value::Int16(self))
        }
    }

    impl Literal for f32 {
        fn into_value(self) -> Result<Value, ValueError> {
            Value::float32(self)
        }
    }

    impl Literal for &str {
        fn into_value(self) -> Result<Value, ValueError> {
            Value::string(self)
        }
    }

    impl<const N: usize> Literal for &[u8; N] {
        fn into_value(self) -> Result<Value, ValueError> {
            Value::bytes(self.as_slice())
        }
    }

    /// Converts an expression element.
    fn value<T>(x: T) -> Result<Value, ValueError>
    where
        T: TryInto<Value>,
        ValueError: From<T::Error>,
    {
        Ok(x.try_into()?)
    }

    /// `tuple!`'s elements.
    pub mod tuple {
        use super::*;

        /// A literal element.
        #[inline]
        pub fn literal<T: Literal>(x: T) -> Result<Value, ValueError> {
            x.into_value()
        }

        /// An expression element.
        #[inline]
        pub fn expr<T>(x: T) -> Result<Value, ValueError>
        where
            T: TryInto<Value>,
            ValueError: From<T::Error>,
        {
            value(x)
        }

        /// The tuple, or the first element's error with its position.
        ///
        /// # Errors
        /// [`TupleError::Value`]; [`TupleError::BadArity`] if `N` is not 1..=4 (which the macro
        /// rules out).
        pub fn build<const N: usize>(
            elements: [Result<Value, ValueError>; N],
        ) -> Result<Tuple, TupleError> {
            if N == 0 || N > MAX_ARITY {
                return Err(TupleError::BadArity(N));
            }
            let mut out = Tuple::empty();
            for (index, element) in elements.into_iter().enumerate() {
                let v = element
                    .and_then(|v| v.validate().map(|()| v))
                    .map_err(|source| TupleError::Value { index, source })?;
                out.push_checked(v);
            }
            Ok(out)
        }
    }

    /// `template!`'s positions.
    pub mod template {
        use super::*;

        /// A literal actual.
        #[inline]
        pub fn literal<T: Literal>(x: T) -> Result<Field, ValueError> {
            x.into_value().map(Field::Actual)
        }

        /// An expression actual.
        #[inline]
        pub fn expr<T>(x: T) -> Result<Field, ValueError>
        where
            T: TryInto<Value>,
            ValueError: From<T::Error>,
        {
            value(x).map(Field::Actual)
        }

        /// `?`.
        #[inline]
        pub const fn any() -> Result<Field, ValueError> {
            Ok(Field::ANY)
        }

        /// `?int16`, `?float32`, `?str`.
        #[inline]
        pub const fn typed(code: TypeCode) -> Result<Field, ValueError> {
            Ok(Field::Formal(Some(code)))
        }

        /// The template, or the first actual's error with its position.
        ///
        /// # Errors
        /// [`TupleError::Value`]; [`TupleError::BadArity`] if `N` is not 1..=4 (which the macro
        /// rules out).
        pub fn build<const N: usize>(
            positions: [Result<Field, ValueError>; N],
        ) -> Result<Template, TupleError> {
            if N == 0 || N > MAX_ARITY {
                return Err(TupleError::BadArity(N));
            }
            let mut out = Template::empty();
            for (index, position) in positions.into_iter().enumerate() {
                let f = position
                    .and_then(|f| match &f {
                        Field::Actual(v) => v.validate().map(|()| f),
                        Field::Formal(_) => Ok(f),
                    })
                    .map_err(|source| TupleError::Value { index, source })?;
                out.push_checked(f);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::{
        Field, Message, Template, Tuple, TupleError, TypeCode, Value, ValueError, parse_template,
        parse_tuple,
    };

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn tuple_literals_follow_the_text_syntax() {
        let t = crate::tuple!("SENSOR", "LIGHT", 512, 1.5).unwrap();
        assert_eq!(t, parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#).unwrap());
        assert_eq!(t.signature(), 0xf6);
        assert_eq!(
            crate::tuple!(-32768, 32767, 0x7fff, -0.0).unwrap().values(),
            [
                Value::Int16(-32768),
                Value::Int16(32767),
                Value::Int16(0x7fff),
                Value::Float32(-0.0),
            ]
        );
        let neg_zero = crate::tuple!(-0.0).unwrap();
        assert!(neg_zero.values()[0].as_f32().unwrap().is_sign_negative());
        // An integral float literal stays float32; suffixes i16/f32 are allowed.
        assert_eq!(
            crate::tuple!(512.0, 5i16, 2.5f32, 2e3).unwrap().values(),
            [
                Value::Float32(512.0),
                Value::Int16(5),
                Value::Float32(2.5),
                Value::Float32(2000.0),
            ]
        );
        assert_eq!(
            crate::tuple!(b"AB", "AB").unwrap().values(),
            [Value::Bytes(b"AB".to_vec()), s("AB")]
        );
        // Trailing comma.
        assert_eq!(crate::tuple!(1,).unwrap().arity(), 1);
    }

    #[test]
    fn tuple_expressions_convert_at_run_time() {
        let (i, u, f, d) = (32767i32, 32768u16, f32::NAN, 1e39f64);
        assert_eq!(crate::tuple!(i).unwrap().values(), [Value::Int16(32767)]);
        assert_eq!(
            crate::tuple!("A", u),
            Err(TupleError::Value {
                index: 1,
                source: ValueError::IntOutOfRange(32768)
            })
        );
        assert_eq!(
            crate::tuple!("A", "B", f),
            Err(TupleError::Value {
                index: 2,
                source: ValueError::NaN
            })
        );
        assert_eq!(
            crate::tuple!(1, 2, 3, d),
            Err(TupleError::Value {
                index: 3,
                source: ValueError::FloatOverflow(1e39)
            })
        );
        // Expressions that begin with a literal are expressions, typed by Rust's rules.
        assert_eq!(
            crate::tuple!(256 * 2, 1.0 / 4.0, "ab".to_uppercase())
                .unwrap()
                .values(),
            [Value::Int16(512), Value::Float32(0.25), s("AB")]
        );
        assert_eq!(
            crate::tuple!(256 * 256),
            Err(TupleError::Value {
                index: 0,
                source: ValueError::IntOutOfRange(65536)
            })
        );
        // A Value element is validated.
        assert_eq!(
            crate::tuple!(Value::Float32(f32::NAN)),
            Err(TupleError::Value {
                index: 0,
                source: ValueError::NaN
            })
        );
        // Every element is evaluated, in order, before the first error is reported.
        let mut seen = Vec::new();
        let mut el = |n: i32| {
            seen.push(n);
            n * 20000
        };
        assert!(crate::tuple!(el(1), el(2), el(3)).is_err());
        assert_eq!(seen, [1, 2, 3]);
        // Over-long string literal.
        let long = crate::tuple!("0123456789abcdef", vec![0u8; crate::MAX_VALUE_LEN + 1]);
        assert!(matches!(
            long,
            Err(TupleError::Value {
                index: 1,
                source: ValueError::TooLong { .. }
            })
        ));
    }

    #[test]
    fn tuple_elements_may_use_the_question_mark_operator() {
        fn f(x: &str) -> Result<Tuple, Box<dyn std::error::Error>> {
            Ok(crate::tuple!("N", x.parse::<i16>()?)?)
        }
        assert_eq!(f("7").unwrap().values(), [s("N"), Value::Int16(7)]);
        assert!(f("x").is_err());
    }

    #[test]
    fn template_positions() {
        let p = crate::template!("SENSOR", ?, ?int16, ?float32).unwrap();
        assert_eq!(
            p,
            parse_template(r#"("SENSOR", ?, ?int16, ?float32)"#).unwrap()
        );
        assert_eq!(
            p.fields(),
            [
                Field::Actual(s("SENSOR")),
                Field::ANY,
                Field::Formal(Some(TypeCode::Int16)),
                Field::Formal(Some(TypeCode::Float32)),
            ]
        );
        let q = crate::template!(?str, ?, 1.5, b"x",).unwrap();
        assert_eq!(q, parse_template(r#"(?str, ?, 1.5, x"78")"#).unwrap());
        assert_eq!(
            crate::template!(?).unwrap(),
            Template::new([Field::ANY]).unwrap()
        );
        let (a, b) = ("SENSOR", "LIGHT");
        let r = crate::template!(a, b, ?, ?).unwrap();
        assert_eq!((r.signature(), r.pattern_byte()), (0xf0, 0x43));
        let big: u32 = 70000;
        assert_eq!(
            crate::template!(?, big),
            Err(TupleError::Value {
                index: 1,
                source: ValueError::IntOutOfRange(70000)
            })
        );
        assert_eq!(
            crate::template!(?, ?, ?, f64::NAN),
            Err(TupleError::Value {
                index: 3,
                source: ValueError::NaN
            })
        );
    }

    #[test]
    fn build_helpers_refuse_bad_arity() {
        use super::__private::{template, tuple};
        assert_eq!(tuple::build::<0>([]), Err(TupleError::BadArity(0)));
        assert_eq!(
            template::build(std::array::from_fn::<_, 5, _>(|_| template::any())),
            Err(TupleError::BadArity(5))
        );
    }

    /// Any value: int16, non-NaN float32 (±inf and ±0.0 included), string, bytes.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i16>().prop_map(Value::Int16),
            any::<f32>()
                .prop_filter("no NaN", |f| !f.is_nan())
                .prop_map(Value::Float32),
            prop::sample::select(vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY])
                .prop_map(Value::Float32),
            ".{0,12}".prop_map(|x| Value::Str(x.into())),
            prop::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
        ]
    }

    /// `t` encoded in an OUT message (spec §4) and decoded again.
    fn round_trip(t: &Tuple) -> Tuple {
        let bytes = Message::Out {
            tuple: t.clone(),
            lifetime: None,
        }
        .to_bytes(None);
        match Message::parse(&bytes, None).unwrap().message {
            Message::Out { tuple, .. } => tuple,
            other => panic!("decoded {other:?}"),
        }
    }

    fn same_bits(a: &Tuple, b: &Tuple) -> bool {
        a.values().len() == b.values().len()
            && a.values()
                .iter()
                .zip(b.values())
                .all(|(x, y)| match (x, y) {
                    (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
                    _ => x == y,
                })
    }

    proptest! {
        #[test]
        fn tuple_macro_equals_tuple_new(a in value(), b in value(), c in value(), d in value()) {
            let vs = [a, b, c, d];
            let [a, b, c, d] = vs.clone();
            prop_assert_eq!(crate::tuple!(a.clone()), Tuple::new(vs[..1].iter().cloned()));
            prop_assert_eq!(crate::tuple!(a.clone(), b.clone()), Tuple::new(vs[..2].iter().cloned()));
            prop_assert_eq!(
                crate::tuple!(a.clone(), b.clone(), c.clone()),
                Tuple::new(vs[..3].iter().cloned())
            );
            let t = crate::tuple!(a, b, c, d).unwrap();
            prop_assert!(same_bits(&t, &Tuple::new(vs).unwrap()));
        }

        #[test]
        fn rust_tuples_round_trip_through_the_codec(
            i in any::<i16>(),
            w in any::<i32>(),
            f in any::<f32>(),
            x in ".{0,12}",
            b in prop::collection::vec(any::<u8>(), 0..12),
        ) {
            let t = Tuple::try_from((i, x.as_str(), b.clone(), f));
            if f.is_nan() {
                prop_assert_eq!(t, Err(TupleError::Value { index: 3, source: ValueError::NaN }));
            } else {
                let t = t.unwrap();
                prop_assert!(same_bits(&crate::tuple!(i, x.as_str(), b.clone(), f).unwrap(), &t));
                let back = round_trip(&t);
                prop_assert!(same_bits(&back, &t));
                let v = back.values();
                prop_assert_eq!(i16::try_from(&v[0]), Ok(i));
                prop_assert_eq!(<&str>::try_from(&v[1]), Ok(x.as_str()));
                prop_assert_eq!(<&[u8]>::try_from(&v[2]), Ok(b.as_slice()));
                prop_assert_eq!(f32::try_from(&v[3]).map(f32::to_bits), Ok(f.to_bits()));
            }
            // A wider integer is int16 when it fits, an error otherwise; never a float32.
            match (Tuple::try_from((w,)), i16::try_from(w)) {
                (Ok(t), Ok(n)) => prop_assert_eq!(round_trip(&t).into_values(), [Value::Int16(n)]),
                (Err(e), Err(_)) => prop_assert_eq!(
                    e,
                    TupleError::Value { index: 0, source: ValueError::IntOutOfRange(w.into()) }
                ),
                (t, n) => prop_assert!(false, "{w}: {t:?} vs {n:?}"),
            }
        }

        #[test]
        fn template_macro_equals_template_new(a in value(), b in value()) {
            let p = crate::template!(a.clone(), ?, ?str, b.clone()).unwrap();
            let q = Template::new([
                Field::Actual(a),
                Field::ANY,
                Field::Formal(Some(TypeCode::Str)),
                Field::Actual(b),
            ])
            .unwrap();
            prop_assert_eq!(&p, &q);
            prop_assert_eq!((p.signature(), p.pattern_byte()), (q.signature(), q.pattern_byte()));
        }
    }
}
