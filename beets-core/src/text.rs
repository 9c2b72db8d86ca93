//! Text syntax of values, tuples and templates (spec wire-v1 §1–§3), as used by the CLI and by
//! `Display`/`FromStr` on [`Value`], [`Tuple`], [`Field`] and [`Template`].
//!
//! A tuple is written in parentheses, 1 to 4 comma-separated elements: `("SENSOR", "LIGHT", 512,
//! 1.5)`. A template is written the same way, and may also hold *formals* (wildcards). Any ASCII
//! whitespace may surround tokens; `Display` writes `", "` between elements.
//!
//! | element | syntax | parses to |
//! |---|---|---|
//! | int16 | `-?[0-9]+` (no `.`, no exponent), −32768..=32767 | [`Value::Int16`]; out of range is an error, never a float |
//! | float32 | a number with `.` or exponent: `1.5`, `-0.0`, `2e3`, `1.5E-7`; `inf`, `-inf` | [`Value::Float32`] (nearest); overflow and `nan` are errors |
//! | string | `"…"` with JSON escapes `\" \\ \/ \b \f \n \r \t \uXXXX` (surrogate pairs; lone surrogates are errors) | [`Value::Str`] |
//! | bytes | `x"0a0B"`: an even number of hex digits, either case; `x""` is empty | [`Value::Bytes`] |
//! | untyped formal (templates only) | `?` | [`Field::Formal`]`(None)`: any value |
//! | typed formal (templates only) | `?int16`, `?float32`, `?str` | [`Field::Formal`]`(Some(code))`; `?str` also matches bytes |
//!
//! Strings and bytes hold at most [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) (8191) bytes.
//! `Display` escapes `"`, `\` and the control characters U+0000–U+001F and U+007F the way JSON
//! does (`\n`, `\u001f`, …) and prints every other character as is; bytes are printed as
//! lowercase hex. Floats are printed in Rust's shortest round-trip form and always carry a `.`
//! or an exponent (`512.0`, `1e-7`, `-0.0`), or are `inf`/`-inf`, so `parse(display(x)) == x`
//! bit for bit.
//!
//! ```
//! use beets_core::text::{parse_template, parse_tuple};
//! use beets_core::{Field, TypeCode, Value};
//!
//! let t = parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#)?;
//! assert_eq!(t.values()[2], Value::Int16(512));
//! assert_eq!(t.values()[3], Value::Float32(1.5));
//! assert_eq!(t.to_string(), r#"("SENSOR", "LIGHT", 512, 1.5)"#);
//!
//! let p = parse_template(r#"( "SENSOR" , ?int16 )"#)?;
//! assert_eq!(p.fields()[1], Field::Formal(Some(TypeCode::Int16)));
//! assert!(p.matches(&parse_tuple(r#"("SENSOR", -7)"#)?));
//! assert_eq!(p.to_string(), r#"("SENSOR", ?int16)"#);
//!
//! let err = parse_tuple("(40000)").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "integer 40000 at byte 1 is outside int16's range -32768..=32767 (add '.0' for a float32)"
//! );
//! # Ok::<(), beets_core::text::ParseError>(())
//! ```
//!
//! The grammar is flat (no nesting), so the parser is a single loop over the input: it never
//! recurses and never panics, whatever the input.

use std::fmt;
use std::str::FromStr;

use crate::tuple::{Field, MAX_ARITY, Template, Tuple, TupleError};
use crate::value::{TypeCode, Value, ValueError};

/// Why a text could not be parsed as a value, field, tuple or template.
///
/// Every position (`pos`) is a 0-based byte offset into the parsed text. Messages are one line,
/// written to follow `error: ` on a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A token other than the one the syntax requires here.
    #[error("expected {expected} at byte {pos}, found {found}")]
    Expected {
        /// Where the unexpected token starts.
        pos: usize,
        /// What the syntax allows here.
        expected: &'static str,
        /// What was found instead (quoted), or `end of input`.
        found: String,
    },
    /// A string or bytes literal without its closing `"`.
    #[error("string or bytes literal starting at byte {pos} is not closed with '\"'")]
    UnterminatedString {
        /// Where the literal starts.
        pos: usize,
    },
    /// A backslash escape that is not one of JSON's, or a `\u` without 4 hex digits.
    #[error("invalid escape at byte {pos} (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")]
    BadEscape {
        /// Where the backslash is.
        pos: usize,
    },
    /// A `\u` escape of a UTF-16 surrogate that is not part of a high–low pair.
    #[error(
        "lone UTF-16 surrogate in the escape at byte {pos} (\\uD800-\\uDBFF must be followed by \\uDC00-\\uDFFF)"
    )]
    LoneSurrogate {
        /// Where the backslash of the offending escape is.
        pos: usize,
    },
    /// An integer literal outside int16's range (spec §1: never silently a float).
    #[error(
        "integer {text} at byte {pos} is outside int16's range -32768..=32767 (add '.0' for a float32)"
    )]
    IntOutOfRange {
        /// Where the literal starts.
        pos: usize,
        /// The literal (shortened when very long).
        text: String,
    },
    /// A finite float literal beyond float32's range.
    #[error(
        "number {text} at byte {pos} overflows float32 (largest finite is 3.4028235e38; write inf for infinity)"
    )]
    FloatOverflow {
        /// Where the literal starts.
        pos: usize,
        /// The literal (shortened when very long).
        text: String,
    },
    /// `nan` (any case, any sign): BeeTS has no NaN (spec §1).
    #[error("NaN at byte {pos} is not a BeeTS value (spec wire-v1 §1)")]
    NaN {
        /// Where the literal starts.
        pos: usize,
    },
    /// A character other than a hex digit inside `x"…"`.
    #[error("invalid hex digit {found:?} at byte {pos} in a bytes literal")]
    BadHex {
        /// Where the character is.
        pos: usize,
        /// The character.
        found: char,
    },
    /// A bytes literal with an odd number of hex digits.
    #[error("bytes literal at byte {pos} has an odd number of hex digits ({digits})")]
    OddHex {
        /// Where the literal (its `x`) starts.
        pos: usize,
        /// How many hex digits it has.
        digits: usize,
    },
    /// Not 1 to 4 elements.
    #[error("{found} elements, but a tuple or template has 1 to 4")]
    Arity {
        /// How many elements the text has.
        found: usize,
    },
    /// A string or bytes value over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes.
    #[error(
        "string or bytes literal at byte {pos} holds {len} bytes, more than the limit of {max}"
    )]
    TooLong {
        /// Where the literal starts.
        pos: usize,
        /// Its length in bytes (UTF-8 for strings, decoded for bytes).
        len: usize,
        /// The limit, [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
        max: usize,
    },
    /// Something other than whitespace after the complete tuple, template or value.
    #[error("unexpected input at byte {pos} after the end")]
    TrailingInput {
        /// Where the extra input starts.
        pos: usize,
    },
    /// A formal (`?`, `?int16`, …) where only values are allowed (a tuple or a single value).
    #[error("formal '?' at byte {pos} is allowed only in a template, not in a tuple or value")]
    FormalInTuple {
        /// Where the `?` is.
        pos: usize,
    },
    /// A value refused for another reason by the value checks (not produced by the current
    /// checks; kept so that new [`ValueError`]s do not need a new variant here).
    #[error("invalid value at byte {pos}: {message}")]
    Invalid {
        /// Where the value starts.
        pos: usize,
        /// Why it was refused.
        message: String,
    },
}

/// Parses a tuple such as `("SENSOR", "LIGHT", 512, 1.5)` (spec wire-v1 §1–§2; syntax in the
/// [module docs](self)). Same as `s.parse::<Tuple>()`.
///
/// # Errors
/// A [`ParseError`] naming the cause and its byte position: bad syntax
/// ([`Expected`](ParseError::Expected), [`TrailingInput`](ParseError::TrailingInput), …), an
/// int16 out of range, a float32 overflow or `nan`, a formal (`?`), 0 or more than 4 elements,
/// or a string/bytes value over [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN) bytes.
pub fn parse_tuple(s: &str) -> Result<Tuple, ParseError> {
    let fields = Parser::new(s).fields(false)?;
    let starts: Vec<usize> = fields.iter().map(|(pos, _)| *pos).collect();
    let values = fields.into_iter().filter_map(|(_, f)| match f {
        Field::Actual(v) => Some(v),
        Field::Formal(_) => None,
    });
    Tuple::new(values).map_err(|e| tuple_error(&starts, e))
}

/// Parses a template such as `("SENSOR", ?int16, ?)` (spec wire-v1 §3; syntax in the
/// [module docs](self)): values are actuals, `?` is an untyped formal, `?int16`, `?float32` and
/// `?str` are typed formals. A text without formals is a template of actuals only. Same as
/// `s.parse::<Template>()`.
///
/// # Errors
/// As [`parse_tuple`], except that formals are allowed; an unknown type after `?` is
/// [`ParseError::Expected`].
pub fn parse_template(s: &str) -> Result<Template, ParseError> {
    let fields = Parser::new(s).fields(true)?;
    let starts: Vec<usize> = fields.iter().map(|(pos, _)| *pos).collect();
    Template::new(fields.into_iter().map(|(_, f)| f)).map_err(|e| tuple_error(&starts, e))
}

impl FromStr for Tuple {
    type Err = ParseError;

    /// Parses a tuple; see [`parse_tuple`].
    fn from_str(s: &str) -> Result<Tuple, ParseError> {
        parse_tuple(s)
    }
}

impl FromStr for Template {
    type Err = ParseError;

    /// Parses a template; see [`parse_template`].
    fn from_str(s: &str) -> Result<Template, ParseError> {
        parse_template(s)
    }
}

impl FromStr for Value {
    type Err = ParseError;

    /// Parses one element, e.g. `512`, `1.5`, `"LIGHT"` or `x"0a0b"`, with optional surrounding
    /// ASCII whitespace (syntax in the [module docs](self)).
    fn from_str(s: &str) -> Result<Value, ParseError> {
        let mut p = Parser::new(s);
        p.skip_ws();
        let start = p.pos;
        let field = p.field(false)?;
        p.end()?;
        match field {
            Field::Actual(v) => Ok(v),
            Field::Formal(_) => Err(ParseError::FormalInTuple { pos: start }),
        }
    }
}

impl FromStr for Field {
    type Err = ParseError;

    /// Parses one template position: a value (an actual) or a formal `?`, `?int16`, `?float32`,
    /// `?str`, with optional surrounding ASCII whitespace.
    fn from_str(s: &str) -> Result<Field, ParseError> {
        let mut p = Parser::new(s);
        p.skip_ws();
        let f = p.field(true)?;
        p.end()?;
        Ok(f)
    }
}

impl fmt::Display for Value {
    /// Writes the element syntax: `512`, `1.5`, `"LIGHT"` (JSON-escaped), `x"0a0b"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int16(i) => write!(f, "{i}"),
            Value::Float32(x) => write_f32(f, *x),
            Value::Str(s) => write_str_literal(f, s),
            Value::Bytes(b) => {
                f.write_str("x\"")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("\"")
            }
        }
    }
}

impl fmt::Display for Field {
    /// Writes an actual as its value, a formal as `?`, `?int16`, `?float32` or `?str`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Actual(v) => fmt::Display::fmt(v, f),
            Field::Formal(None) => f.write_str("?"),
            Field::Formal(Some(code)) => write!(f, "?{}", code.name()),
        }
    }
}

impl fmt::Display for Tuple {
    /// Writes `(e1, e2, …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, self.values())
    }
}

impl fmt::Display for Template {
    /// Writes `(f1, f2, …)`, formals as `?` or `?type`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, self.fields())
    }
}

fn write_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    f.write_str("(")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        fmt::Display::fmt(item, f)?;
    }
    f.write_str(")")
}

/// Shortest round-trip form, always with a `.` or exponent; `inf`/`-inf`; `nan` (which only an
/// unchecked `Value::Float32(NAN)` can hold, and which does not parse back).
fn write_f32(f: &mut fmt::Formatter<'_>, x: f32) -> fmt::Result {
    if x.is_nan() {
        return f.write_str("nan");
    }
    if x.is_infinite() {
        return f.write_str(if x > 0.0 { "inf" } else { "-inf" });
    }
    // `{:?}` is Rust's shortest representation that round-trips, e.g. `512.0`, `1e-7`, `-0.0`.
    let s = format!("{x:?}");
    f.write_str(&s)?;
    if !s.contains(['.', 'e', 'E']) {
        f.write_str(".0")?;
    }
    Ok(())
}

fn write_str_literal(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    let mut run = 0; // start of the not yet written, unescaped run
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{0}'..='\u{1f}' | '\u{7f}' => "",
            _ => continue,
        };
        f.write_str(&s[run..i])?;
        if esc.is_empty() {
            write!(f, "\\u{:04x}", u32::from(c))?;
        } else {
            f.write_str(esc)?;
        }
        run = i + c.len_utf8();
    }
    f.write_str(&s[run..])?;
    f.write_str("\"")
}

/// Maps a construction error of a parsed tuple/template to a positioned parse error.
fn tuple_error(starts: &[usize], e: TupleError) -> ParseError {
    match e {
        TupleError::BadArity(found) => ParseError::Arity { found },
        TupleError::Value { index, source } => {
            value_error(starts.get(index).copied().unwrap_or(0), source)
        }
    }
}

fn value_error(pos: usize, e: ValueError) -> ParseError {
    match e {
        ValueError::TooLong { len, max } => ParseError::TooLong { pos, len, max },
        ValueError::NaN => ParseError::NaN { pos },
        other => ParseError::Invalid {
            pos,
            message: other.to_string(),
        },
    }
}

/// Shortens a literal quoted in an error message.
fn clip(text: &str) -> String {
    const MAX: usize = 32;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX - 3).collect();
        format!("{head}...")
    }
}

const EXPECT_VALUE: &str = "a value (number, \"string\", x\"hex\", inf)";
const EXPECT_FIELD: &str = "a value or formal (number, \"string\", x\"hex\", inf, ?, ?type)";

/// A cursor over the input. `pos` always sits on a char boundary: it only moves over ASCII bytes
/// or over whole `str` slices.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        Parser { src, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// A description of the input at `pos` for error messages.
    fn found_at(&self, pos: usize) -> String {
        match self.src.get(pos..).and_then(|r| r.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => "end of input".to_owned(),
        }
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        ParseError::Expected {
            pos: self.pos,
            expected,
            found: self.found_at(self.pos),
        }
    }

    /// Skips trailing whitespace and requires the end of input.
    fn end(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        if self.pos < self.src.len() {
            Err(ParseError::TrailingInput { pos: self.pos })
        } else {
            Ok(())
        }
    }

    /// Reads `[A-Za-z0-9_]*`.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.pos += 1;
        }
        self.src.get(start..self.pos).unwrap_or("")
    }

    /// `( field (, field)* )` then end of input; each field with its start position.
    fn fields(&mut self, allow_formals: bool) -> Result<Vec<(usize, Field)>, ParseError> {
        self.skip_ws();
        if self.peek() != Some(b'(') {
            return Err(self.expected("'('"));
        }
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b')') {
            return Err(ParseError::Arity { found: 0 });
        }
        let mut out = Vec::with_capacity(MAX_ARITY);
        loop {
            self.skip_ws();
            let start = self.pos;
            let field = self.field(allow_formals)?;
            out.push((start, field));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.expected("',' or ')'")),
            }
        }
        if out.len() > MAX_ARITY {
            return Err(ParseError::Arity { found: out.len() });
        }
        self.end()?;
        Ok(out)
    }

    fn field(&mut self, allow_formals: bool) -> Result<Field, ParseError> {
        let start = self.pos;
        if self.peek() != Some(b'?') {
            let expected = if allow_formals {
                EXPECT_FIELD
            } else {
                EXPECT_VALUE
            };
            return self.value(expected).map(Field::Actual);
        }
        if !allow_formals {
            return Err(ParseError::FormalInTuple { pos: start });
        }
        self.pos += 1;
        let name_pos = self.pos;
        let name = self.word();
        let code = match name {
            "" => return Ok(Field::ANY),
            "int16" => TypeCode::Int16,
            "float32" => TypeCode::Float32,
            "str" => TypeCode::Str,
            other => {
                return Err(ParseError::Expected {
                    pos: name_pos,
                    expected: "a type after '?' (int16, float32 or str)",
                    found: format!("{:?}", clip(other)),
                });
            }
        };
        Ok(Field::Formal(Some(code)))
    }

    fn value(&mut self, expected: &'static str) -> Result<Value, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                let s = self.string()?;
                Value::string(s).map_err(|e| value_error(start, e))
            }
            Some(b'x') if self.rest().starts_with("x\"") => {
                let b = self.hex_bytes()?;
                Value::bytes(b).map_err(|e| value_error(start, e))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) if b.is_ascii_alphabetic() => {
                let word = self.word();
                if word == "inf" {
                    Ok(Value::Float32(f32::INFINITY))
                } else if word.eq_ignore_ascii_case("nan") {
                    Err(ParseError::NaN { pos: start })
                } else {
                    Err(ParseError::Expected {
                        pos: start,
                        expected,
                        found: format!("{:?}", clip(word)),
                    })
                }
            }
            _ => Err(self.expected(expected)),
        }
    }

    /// Requires at least one ASCII digit and skips all of them.
    fn digits(&mut self, expected: &'static str) -> Result<(), ParseError> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.expected(expected));
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        Ok(())
    }

    /// `-?[0-9]+` → int16; with `.[0-9]+` and/or `[eE][+-]?[0-9]+` → float32; `-inf`.
    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            if self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                let word_pos = self.pos;
                let word = self.word();
                return if word == "inf" {
                    Ok(Value::Float32(f32::NEG_INFINITY))
                } else if word.eq_ignore_ascii_case("nan") {
                    Err(ParseError::NaN { pos: start })
                } else {
                    Err(ParseError::Expected {
                        pos: word_pos,
                        expected: "a digit or 'inf' after '-'",
                        found: format!("{:?}", clip(word)),
                    })
                };
            }
        }
        self.digits("a digit")?;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits("a digit after '.'")?;
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits("a digit in the exponent")?;
            is_float = true;
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        if is_float {
            // Rust's parser rounds to the nearest float32 and gives ±inf on overflow.
            match text.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(Value::Float32(x)),
                Ok(_) => Err(ParseError::FloatOverflow {
                    pos: start,
                    text: clip(text),
                }),
                Err(e) => Err(ParseError::Invalid {
                    pos: start,
                    message: e.to_string(),
                }),
            }
        } else {
            text.parse::<i16>()
                .map(Value::Int16)
                .map_err(|_| ParseError::IntOutOfRange {
                    pos: start,
                    text: clip(text),
                })
        }
    }

    /// A `"…"` literal with JSON escapes; `pos` is on the opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(i) = rest.find(['"', '\\']) else {
                return Err(ParseError::UnterminatedString { pos: start });
            };
            out.push_str(rest.get(..i).unwrap_or(""));
            self.pos += i;
            if self.peek() == Some(b'"') {
                self.pos += 1;
                return Ok(out);
            }
            let esc = self.pos;
            self.pos += 1;
            let c = match self.peek() {
                None => return Err(ParseError::UnterminatedString { pos: start }),
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    self.pos += 1;
                    out.push(self.unicode_escape(esc)?);
                    continue;
                }
                Some(_) => return Err(ParseError::BadEscape { pos: esc }),
            };
            self.pos += 1;
            out.push(c);
        }
    }

    /// The rest of a `\u` escape starting at `esc` (`pos` after the `u`), surrogate pairs
    /// included.
    fn unicode_escape(&mut self, esc: usize) -> Result<char, ParseError> {
        let hi = self.hex4(esc)?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if !self.rest().starts_with("\\u") {
                    return Err(ParseError::LoneSurrogate { pos: esc });
                }
                let esc2 = self.pos;
                self.pos += 2;
                let lo = self.hex4(esc2)?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(ParseError::LoneSurrogate { pos: esc });
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(ParseError::LoneSurrogate { pos: esc }),
            _ => hi,
        };
        char::from_u32(code).ok_or(ParseError::LoneSurrogate { pos: esc })
    }

    /// Exactly 4 hex digits of a `\u` escape whose backslash is at `esc`.
    fn hex4(&mut self, esc: usize) -> Result<u32, ParseError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or(ParseError::BadEscape { pos: esc })?;
            v = (v << 4) | d;
            self.pos += 1;
        }
        Ok(v)
    }

    /// An `x"…"` literal; `pos` is on the `x`.
    fn hex_bytes(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.pos;
        self.pos += 2;
        let digits_start = self.pos;
        loop {
            match self.peek() {
                Some(b'"') => break,
                Some(b) if b.is_ascii_hexdigit() => self.pos += 1,
                None => return Err(ParseError::UnterminatedString { pos: start }),
                Some(_) => {
                    return Err(ParseError::BadHex {
                        pos: self.pos,
                        found: self.rest().chars().next().unwrap_or('\u{fffd}'),
                    });
                }
            }
        }
        let hex = self
            .src
            .as_bytes()
            .get(digits_start..self.pos)
            .unwrap_or(&[]);
        self.pos += 1;
        if hex.len() % 2 != 0 {
            return Err(ParseError::OddHex {
                pos: start,
                digits: hex.len(),
            });
        }
        let nibble = |b: u8| char::from(b).to_digit(16).unwrap_or(0) as u8;
        Ok(hex
            .chunks_exact(2)
            .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
            .collect())
    }
}

/// Proptest strategies for values, tuples and templates, shared with other test modules
/// (e.g. codec round-trips).
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;

    use crate::tuple::{Field, Template, Tuple};
    use crate::value::{TypeCode, Value};

    /// Any float32 but NaN: ±inf, ±0.0, subnormals, normals, and arbitrary bit patterns.
    pub(crate) fn arb_f32() -> impl Strategy<Value = f32> {
        use proptest::num::f32 as f;
        prop_oneof![
            4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE,
            4 => any::<u32>()
                .prop_map(f32::from_bits)
                .prop_filter("no NaN in BeeTS", |x| !x.is_nan()),
            1 => prop::sample::select(vec![
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                f32::MIN,
                f32::MIN_POSITIVE,
                f32::from_bits(1),
                -f32::from_bits(1),
                f32::EPSILON,
                1.0e-7,
                512.0,
                1.0e16,
                16_777_216.0,
            ]),
        ]
    }

    /// Strings of up to 40 chars, any Unicode, biased towards quotes, backslashes and control
    /// characters.
    pub(crate) fn arb_string() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            3 => any::<char>(),
            1 => prop::sample::select(vec![
                '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{8}', '\u{c}', '\u{1f}', '\u{7f}',
                'ü', '€', '😀', '\u{2028}', '\u{fffd}', 'x', '?', '(', ')', ',', ' ',
            ]),
        ];
        prop::collection::vec(ch, 0..40).prop_map(String::from_iter)
    }

    /// Any valid value: int16, non-NaN float32, string, bytes (up to 40 bytes).
    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i16>().prop_map(Value::Int16),
            arb_f32().prop_map(Value::Float32),
            arb_string().prop_map(|s| Value::Str(s.into())),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ]
    }

    /// Any template field: actual, untyped formal, or typed formal.
    pub(crate) fn arb_field() -> impl Strategy<Value = Field> {
        prop_oneof![
            2 => arb_value().prop_map(Field::Actual),
            1 => Just(Field::ANY),
            1 => prop::sample::select(vec![TypeCode::Int16, TypeCode::Float32, TypeCode::Str])
                .prop_map(|c| Field::Formal(Some(c))),
        ]
    }

    /// Tuples of arity 1..=4.
    pub(crate) fn arb_tuple() -> impl Strategy<Value = Tuple> {
        prop::collection::vec(arb_value(), 1..=4)
            .prop_map(|vs| Tuple::new(vs).expect("strategy builds valid tuples"))
    }

    /// Templates of arity 1..=4 mixing actuals, typed and untyped formals.
    pub(crate) fn arb_template() -> impl Strategy<Value = Template> {
        prop::collection::vec(arb_field(), 1..=4)
            .prop_map(|fs| Template::new(fs).expect("strategy builds valid templates"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::strategies::{arb_template, arb_tuple, arb_value};
    use super::*;
    use crate::value::MAX_VALUE_LEN;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    /// Equality that also tells −0.0 from +0.0 (bit-exact floats).
    fn same_value(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    fn same_field(a: &Field, b: &Field) -> bool {
        match (a, b) {
            (Field::Actual(x), Field::Actual(y)) => same_value(x, y),
            _ => a == b,
        }
    }

    fn value(text: &str) -> Value {
        text.parse().unwrap()
    }

    #[test]
    fn spec_example_tuple_parses_and_displays_back() {
        let text = r#"("SENSOR", "LIGHT", 512, 1.5)"#;
        let t = parse_tuple(text).unwrap();
        assert_eq!(
            t.values(),
            &[
                s("SENSOR"),
                s("LIGHT"),
                Value::Int16(512),
                Value::Float32(1.5)
            ]
        );
        assert_eq!(t.signature(), 0xf6);
        assert_eq!(t.to_string(), text);
        assert_eq!(text.parse::<Tuple>().unwrap(), t);
    }

    #[test]
    fn spec_example_template_with_untyped_formals() {
        let text = r#"("SENSOR", "LIGHT", ?, ?)"#;
        let p = parse_template(text).unwrap();
        assert_eq!(
            p.fields(),
            &[
                Field::Actual(s("SENSOR")),
                Field::Actual(s("LIGHT")),
                Field::ANY,
                Field::ANY
            ]
        );
        assert_eq!((p.signature(), p.pattern_byte()), (0xf0, 0x43));
        assert_eq!(p.to_string(), text);
        assert!(p.matches(&parse_tuple(r#"("SENSOR", "LIGHT", 512, 1.5)"#).unwrap()));
    }

    #[test]
    fn spec_example_template_with_typed_formal() {
        let p: Template = r#"("SENSOR", ?int16)"#.parse().unwrap();
        assert_eq!(
            p.fields(),
            &[
                Field::Actual(s("SENSOR")),
                Field::Formal(Some(TypeCode::Int16))
            ]
        );
        assert_eq!((p.signature(), p.pattern_byte()), (0xd0, 0x24));
        assert!(p.matches(&parse_tuple(r#"("SENSOR", 7)"#).unwrap()));
        assert!(!p.matches(&parse_tuple(r#"("SENSOR", 7.0)"#).unwrap()));
        assert_eq!(p.to_string(), r#"("SENSOR", ?int16)"#);
    }

    #[test]
    fn all_formal_kinds_parse_and_display() {
        let p = parse_template("(?,?int16,?float32,?str)").unwrap();
        assert_eq!(
            p.fields(),
            &[
                Field::ANY,
                Field::Formal(Some(TypeCode::Int16)),
                Field::Formal(Some(TypeCode::Float32)),
                Field::Formal(Some(TypeCode::Str)),
            ]
        );
        assert_eq!(p.to_string(), "(?, ?int16, ?float32, ?str)");
    }

    #[test]
    fn str_formal_matches_bytes_and_strings() {
        let p = parse_template("(?str)").unwrap();
        assert!(p.matches(&parse_tuple(r#"(x"4142")"#).unwrap()));
        assert!(p.matches(&parse_tuple(r#"("AB")"#).unwrap()));
        assert!(!p.matches(&parse_tuple("(1)").unwrap()));
    }

    #[test]
    fn template_without_formals_is_all_actuals() {
        let p = parse_template(r#"("A", 1, 2.5)"#).unwrap();
        let t = parse_tuple(r#"("A", 1, 2.5)"#).unwrap();
        assert_eq!(p, Template::exact(&t));
    }

    #[test]
    fn escapes_parse_including_unicode_and_surrogate_pair() {
        assert_eq!(
            value(r#""q\" b\\ s\/ \b\f\n\r\t""#),
            s("q\" b\\ s/ \u{8}\u{c}\n\r\t")
        );
        assert_eq!(value(r#""Gr\u00fc\u00DFe""#), s("Grüße"));
        assert_eq!(value(r#""\ud83d\ude00!""#), s("😀!"));
        assert_eq!(value(r#""\u0000""#), s("\0"));
        // Non-ASCII text is taken as is.
        assert_eq!(value(r#""Grüße 😀""#), s("Grüße 😀"));
    }

    #[test]
    fn display_escapes_quotes_backslash_and_controls_only() {
        let v = s("a\"b\\c\n\t\u{8}\u{c}\r\u{0}\u{1f}\u{7f}/ü😀\u{2028}");
        assert_eq!(
            v.to_string(),
            r#""a\"b\\c\n\t\b\f\r\u0000\u001f\u007f/ü😀"#.to_owned() + "\u{2028}\""
        );
        assert_eq!(value(&v.to_string()), v);
    }

    #[test]
    fn hex_bytes_parse_either_case_and_display_lowercase() {
        assert_eq!(value(r#"x"DEAD""#), Value::Bytes(vec![0xde, 0xad]));
        assert_eq!(value(r#"x"0a0B""#), Value::Bytes(vec![0x0a, 0x0b]));
        assert_eq!(
            Value::Bytes(vec![0xde, 0xad, 0x00]).to_string(),
            r#"x"dead00""#
        );
        assert_eq!(value(r#"x"""#), Value::Bytes(vec![]));
        assert_eq!(Value::Bytes(vec![]).to_string(), r#"x"""#);
        assert_eq!(value(r#""""#), s(""));
    }

    #[test]
    fn integers_and_floats_are_told_apart() {
        assert_eq!(value("-32768"), Value::Int16(-32768));
        assert_eq!(value("32767"), Value::Int16(32767));
        assert_eq!(value("-0"), Value::Int16(0));
        assert_eq!(value("007"), Value::Int16(7));
        assert_eq!(value("5.0"), Value::Float32(5.0));
        assert_eq!(value("2e3"), Value::Float32(2000.0));
        assert_eq!(value("1.5E-7"), Value::Float32(1.5e-7));
        assert_eq!(value("1e+2"), Value::Float32(100.0));
        assert_eq!(value("0.1"), Value::Float32(0.1));
        assert_eq!(value("40000.0"), Value::Float32(40000.0));
        assert_eq!(value("inf"), Value::Float32(f32::INFINITY));
        assert_eq!(value("-inf"), Value::Float32(f32::NEG_INFINITY));
        let Value::Float32(z) = value("-0.0") else {
            panic!("not a float")
        };
        assert_eq!(z.to_bits(), (-0.0f32).to_bits());
        // Below float32's range: rounds to a subnormal or to zero, not an error.
        assert_eq!(value("1e-45"), Value::Float32(f32::from_bits(1)));
        assert_eq!(value("1e-50"), Value::Float32(0.0));
        // Just below the rounding boundary to infinity: rounds to MAX.
        assert_eq!(value("3.40282356e38"), Value::Float32(f32::MAX));
    }

    #[test]
    fn float_display_round_trips_and_looks_like_a_float() {
        let cases: &[(f32, &str)] = &[
            (512.0, "512.0"),
            (1.5, "1.5"),
            (1e-7, "1e-7"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (f32::INFINITY, "inf"),
            (f32::NEG_INFINITY, "-inf"),
            (1e16, "1e16"),
            (f32::MAX, "3.4028235e38"),
            (f32::from_bits(1), "1e-45"),
            (0.1, "0.1"),
            (16_777_216.0, "16777216.0"),
        ];
        for &(x, text) in cases {
            let v = Value::Float32(x);
            assert_eq!(v.to_string(), text, "display of {x:e}");
            assert!(same_value(&value(text), &v), "{text} parses back");
        }
        assert_eq!(Value::Float32(f32::NAN).to_string(), "nan");
    }

    #[test]
    fn whitespace_is_allowed_around_tokens() {
        let t = parse_tuple(" \t( \"A\"\n,\r\n-5 ,\x0c1.5\t)\n ").unwrap();
        assert_eq!(t.values(), &[s("A"), Value::Int16(-5), Value::Float32(1.5)]);
        assert_eq!(
            " ?str ".parse::<Field>(),
            Ok(Field::Formal(Some(TypeCode::Str)))
        );
        assert_eq!(" 7 ".parse::<Value>(), Ok(Value::Int16(7)));
    }

    #[test]
    fn value_and_field_from_str() {
        assert_eq!("\"hi\"".parse::<Value>(), Ok(s("hi")));
        assert_eq!("?".parse::<Field>(), Ok(Field::ANY));
        assert_eq!("3".parse::<Field>(), Ok(Field::Actual(Value::Int16(3))));
        assert_eq!(
            "?".parse::<Value>(),
            Err(ParseError::FormalInTuple { pos: 0 })
        );
        assert_eq!(
            "1 2".parse::<Value>(),
            Err(ParseError::TrailingInput { pos: 2 })
        );
        assert_eq!(
            Field::Formal(Some(TypeCode::Float32)).to_string(),
            "?float32"
        );
    }

    #[test]
    fn length_limit_is_enforced() {
        let ok = format!("(\"{}\")", "a".repeat(MAX_VALUE_LEN));
        assert!(parse_tuple(&ok).is_ok());
        let long = format!("(1, \"{}\")", "a".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(
            parse_tuple(&long),
            Err(ParseError::TooLong {
                pos: 4,
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );
        let long_bytes = format!("(x\"{}\")", "ab".repeat(MAX_VALUE_LEN + 1));
        assert!(matches!(
            parse_template(&long_bytes),
            Err(ParseError::TooLong { pos: 1, .. })
        ));
    }

    #[test]
    fn parse_rejects_int_out_of_range() {
        let e = parse_tuple("(1, 32768)").unwrap_err();
        assert_eq!(
            e,
            ParseError::IntOutOfRange {
                pos: 4,
                text: "32768".into()
            }
        );
        assert!(e.to_string().contains("-32768..=32767"));
        assert!(matches!(
            parse_tuple("(-32769)"),
            Err(ParseError::IntOutOfRange { pos: 1, .. })
        ));
        assert!(matches!(
            parse_tuple(&format!("({})", "9".repeat(100))),
            Err(ParseError::IntOutOfRange { .. })
        ));
    }

    #[test]
    fn parse_rejects_nan() {
        assert_eq!(parse_tuple("(nan)"), Err(ParseError::NaN { pos: 1 }));
        assert_eq!(parse_tuple("(1, NaN)"), Err(ParseError::NaN { pos: 4 }));
        assert_eq!(parse_template("(?, -nan)"), Err(ParseError::NaN { pos: 4 }));
    }

    #[test]
    fn parse_rejects_formal_in_tuple() {
        assert_eq!(
            parse_tuple(r#"("SENSOR", ?)"#),
            Err(ParseError::FormalInTuple { pos: 11 })
        );
        assert_eq!(
            parse_tuple("(?int16)"),
            Err(ParseError::FormalInTuple { pos: 1 })
        );
    }

    #[test]
    fn parse_rejects_arity_5() {
        let e = parse_tuple("(1, 2, 3, 4, 5)").unwrap_err();
        assert_eq!(e, ParseError::Arity { found: 5 });
        assert!(e.to_string().contains("1 to 4"));
        assert_eq!(
            parse_template("(?, ?, ?, ?, ?, ?)"),
            Err(ParseError::Arity { found: 6 })
        );
    }

    #[test]
    fn parse_rejects_empty_tuple() {
        assert_eq!(parse_tuple("()"), Err(ParseError::Arity { found: 0 }));
        assert_eq!(parse_template("( )"), Err(ParseError::Arity { found: 0 }));
        assert!(matches!(
            parse_tuple(""),
            Err(ParseError::Expected { pos: 0, .. })
        ));
    }

    #[test]
    fn parse_rejects_unterminated_string() {
        assert_eq!(
            parse_tuple(r#"(1, "abc)"#),
            Err(ParseError::UnterminatedString { pos: 4 })
        );
        assert_eq!(
            parse_tuple(r#"("abc\"#),
            Err(ParseError::UnterminatedString { pos: 1 })
        );
        assert_eq!(
            parse_tuple(r#"(x"ab"#),
            Err(ParseError::UnterminatedString { pos: 1 })
        );
    }

    #[test]
    fn parse_rejects_odd_hex() {
        assert_eq!(
            parse_tuple(r#"(x"abc")"#),
            Err(ParseError::OddHex { pos: 1, digits: 3 })
        );
    }

    #[test]
    fn parse_rejects_bad_hex_digit() {
        assert_eq!(
            parse_tuple(r#"(x"ag")"#),
            Err(ParseError::BadHex { pos: 4, found: 'g' })
        );
        assert_eq!(
            parse_tuple(r#"(x"ü")"#),
            Err(ParseError::BadHex {
                pos: 3, found: 'ü'
            })
        );
    }

    #[test]
    fn parse_rejects_trailing_input() {
        assert_eq!(
            parse_tuple("(1) x"),
            Err(ParseError::TrailingInput { pos: 4 })
        );
        assert_eq!(
            parse_template("(1)(2)"),
            Err(ParseError::TrailingInput { pos: 3 })
        );
    }

    #[test]
    fn parse_rejects_lone_surrogate() {
        assert_eq!(
            parse_tuple(r#"("\ud800")"#),
            Err(ParseError::LoneSurrogate { pos: 2 })
        );
        assert_eq!(
            parse_tuple(r#"("a\udc00")"#),
            Err(ParseError::LoneSurrogate { pos: 3 })
        );
        assert_eq!(
            parse_tuple(r#"("\ud800\u0041")"#),
            Err(ParseError::LoneSurrogate { pos: 2 })
        );
        assert_eq!(
            parse_tuple(r#"("\ud800x")"#),
            Err(ParseError::LoneSurrogate { pos: 2 })
        );
    }

    #[test]
    fn parse_rejects_float_overflow() {
        assert_eq!(
            parse_tuple("(1e39)"),
            Err(ParseError::FloatOverflow {
                pos: 1,
                text: "1e39".into()
            })
        );
        assert!(matches!(
            parse_tuple("(-3.5e38)"),
            Err(ParseError::FloatOverflow { pos: 1, .. })
        ));
        assert!(matches!(
            parse_tuple("(1e99999999999999999999)"),
            Err(ParseError::FloatOverflow { .. })
        ));
    }

    #[test]
    fn parse_rejects_bad_escape() {
        assert_eq!(
            parse_tuple(r#"("a\q")"#),
            Err(ParseError::BadEscape { pos: 3 })
        );
        assert_eq!(
            parse_tuple(r#"("\u12")"#),
            Err(ParseError::BadEscape { pos: 2 })
        );
        assert_eq!(
            parse_tuple(r#"("\u+123")"#),
            Err(ParseError::BadEscape { pos: 2 })
        );
        assert_eq!(
            parse_tuple(r#"("\ud83d\uzzzz")"#),
            Err(ParseError::BadEscape { pos: 8 })
        );
    }

    #[test]
    fn parse_rejects_malformed_syntax() {
        let expected_at = |text: &str, pos: usize| match parse_template(text) {
            Err(ParseError::Expected { pos: p, .. }) => assert_eq!(p, pos, "{text}"),
            other => panic!("{text}: {other:?}"),
        };
        expected_at("1, 2", 0);
        expected_at("(1 2)", 3);
        expected_at("(1,)", 3);
        expected_at("(,1)", 1);
        expected_at("(1", 2);
        expected_at("(1.)", 3);
        expected_at("(.5)", 1);
        expected_at("(1e)", 3);
        expected_at("(+1)", 1);
        expected_at("(-)", 2);
        expected_at("(-x)", 2);
        expected_at("(?int)", 2);
        expected_at("(infinity)", 1);
        expected_at("(true)", 1);
        expected_at("(X\"00\")", 1);
        expected_at("(x \"00\")", 1);
    }

    #[test]
    fn error_messages_read_as_one_line() {
        let errors = [
            parse_tuple("(1 2)"),
            parse_tuple("(\"a"),
            parse_tuple(r#"("\q")"#),
            parse_tuple(r#"("\udc00")"#),
            parse_tuple("(99999)"),
            parse_tuple("(1e40)"),
            parse_tuple("(nan)"),
            parse_tuple(r#"(x"0g")"#),
            parse_tuple(r#"(x"0")"#),
            parse_tuple("(1,2,3,4,5)"),
            parse_tuple("(1) 2"),
            parse_tuple("(?)"),
        ];
        for e in errors {
            let msg = e.unwrap_err().to_string();
            assert!(!msg.contains('\n') && !msg.is_empty(), "{msg}");
        }
        assert_eq!(
            parse_tuple("(1 2)").unwrap_err().to_string(),
            "expected ',' or ')' at byte 3, found '2'"
        );
        assert_eq!(
            parse_tuple("(1").unwrap_err().to_string(),
            "expected ',' or ')' at byte 2, found end of input"
        );
    }

    #[test]
    fn long_literals_are_shortened_in_errors() {
        let e = parse_tuple(&format!("({})", "1".repeat(1000))).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    proptest! {
        #[test]
        fn value_round_trips(v in arb_value()) {
            let back: Value = v.to_string().parse().unwrap();
            prop_assert!(same_value(&back, &v), "{v:?} -> {} -> {back:?}", v);
        }

        #[test]
        fn tuple_round_trips(t in arb_tuple()) {
            let text = t.to_string();
            let back = parse_tuple(&text).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(back.arity(), t.arity());
            for (a, b) in back.values().iter().zip(t.values()) {
                prop_assert!(same_value(a, b), "{text}: {a:?} vs {b:?}");
            }
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn template_round_trips(p in arb_template()) {
            let text = p.to_string();
            let back = parse_template(&text).unwrap();
            prop_assert_eq!(&back, &p);
            for (a, b) in back.fields().iter().zip(p.fields()) {
                prop_assert!(same_field(a, b), "{text}: {a:?} vs {b:?}");
            }
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn tuple_text_is_a_template_of_actuals(t in arb_tuple()) {
            prop_assert_eq!(parse_template(&t.to_string()).unwrap(), Template::exact(&t));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(text in any::<String>()) {
            let _ = parse_tuple(&text);
            let _ = parse_template(&text);
            let _ = text.parse::<Value>();
            let _ = text.parse::<Field>();
        }

        #[test]
        fn parse_never_panics_on_syntax_soup(
            text in r#"[ ()",?x0-9a-fA-F\\u.eE+\-intfloas_ü😀\n]{0,48}"#
        ) {
            let _ = parse_tuple(&text);
            let _ = parse_template(&text);
            let _ = text.parse::<Value>();
        }

        #[test]
        fn parse_never_panics_on_mutated_text(
            p in arb_template(),
            cut in any::<prop::sample::Index>(),
            insert in prop::sample::select(vec![
                "", "\"", "\\", "\\u", "\\ud800", ",", ")", "(", "?", "x\"", "-", "e", ".",
            ]),
        ) {
            let text = p.to_string();
            let chars: Vec<char> = text.chars().collect();
            let at = cut.index(chars.len() + 1);
            let mutated: String = chars[..at]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[at..].iter().copied().skip(1))
                .collect();
            let _ = parse_tuple(&mutated);
            let _ = parse_template(&mutated);
        }
    }
}
