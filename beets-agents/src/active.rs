//! Active tuples: agent source carried in a tuple (paper §6, design notes: "agent source can travel
//! in tuples over UDP, encrypted with the space key").
//!
//! An active tuple is `("AGENT", name, source)`: the tag [`ACTIVE_TAG`], a name of 1..=16 bytes
//! and the JavaScript source as a string. Send it with an ordinary `out` on a UDP space whose
//! nodes share a password (FPE-keyed, spec §5), so only holders of the key can send one.
//!
//! A receiving [`AgentHost`](crate::AgentHost) starts it **only** if its
//! [`ActivePolicy`](crate::ActivePolicy) is enabled (off by default), the space is allowed
//! (keyed ones only, by default), the source is at most
//! [`ActivePolicy::max_source_len`](crate::ActivePolicy::max_source_len) bytes and fewer than
//! [`ActivePolicy::max_agents`](crate::ActivePolicy::max_agents) active agents run. It is then
//! consumed (not stored) and runs under [`ActivePolicy::limits`](crate::ActivePolicy::limits)
//! with the name `active:<name>`; a new active tuple with the same name replaces it. Active
//! agents can never replace locally loaded ones. With the policy off the tuple is plain data.
//!
//! # Code length limit
//! A UDP message carries at most 1221 bytes (spec §7) and a string value at most 8191 bytes
//! (spec §1); the UDP limit binds. The OUT message of an active tuple takes 1 control byte, 1
//! signature byte, 6 bytes for `"AGENT"`, 1 + *n* bytes for a name of *n* ≤ 16 bytes, 2 length
//! bytes for the source and 2 bytes of lifetime if one is given, so the source may hold
//! **1221 − 29 = 1192 bytes** whatever the name and lifetime ([`MAX_ACTIVE_SOURCE_LEN`]), up to
//! 1208 with a 1-byte name and no lifetime. Minify larger agents or load them from a file.

use beets_core::{Field, Template, Tuple, TypeCode, Value, udp};

/// First element of an active tuple.
pub const ACTIVE_TAG: &str = "AGENT";

/// Longest name of an active agent, in bytes.
pub const MAX_ACTIVE_NAME_LEN: usize = 16;

/// Longest source an active tuple can carry for any name of ≤ 16 bytes, with or without a
/// lifetime: 1221 − (1 + 1 + 6 + 17 + 2 + 2) = 1192 bytes (see the module docs).
pub const MAX_ACTIVE_SOURCE_LEN: usize =
    udp::MAX_MESSAGE_LEN - (1 + 1 + (1 + ACTIVE_TAG.len()) + (1 + MAX_ACTIVE_NAME_LEN) + 2 + 2);

/// Why an active tuple could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActiveError {
    /// The name is empty or longer than [`MAX_ACTIVE_NAME_LEN`].
    #[error("active agent name has {len} bytes, it must have 1..={max}")]
    BadName {
        /// Its length.
        len: usize,
        /// [`MAX_ACTIVE_NAME_LEN`].
        max: usize,
    },
    /// The source does not fit one UDP message.
    #[error(
        "agent source has {len} bytes, an active tuple carries at most {max} (one UDP message of 1221 bytes)"
    )]
    TooLong {
        /// Its length.
        len: usize,
        /// [`MAX_ACTIVE_SOURCE_LEN`].
        max: usize,
    },
}

/// Builds the active tuple `("AGENT", name, source)`, checking the limits above.
///
/// ```
/// let t = beets_agents::active::encode("hello", "({ rules: [] })").unwrap();
/// assert_eq!(t.to_string(), r#"("AGENT", "hello", "({ rules: [] })")"#);
/// assert!(beets_agents::active::encode("x", &"a".repeat(1193)).is_err());
/// ```
///
/// # Errors
/// [`ActiveError::BadName`] or [`ActiveError::TooLong`].
pub fn encode(name: &str, source: &str) -> Result<Tuple, ActiveError> {
    if name.is_empty() || name.len() > MAX_ACTIVE_NAME_LEN {
        return Err(ActiveError::BadName {
            len: name.len(),
            max: MAX_ACTIVE_NAME_LEN,
        });
    }
    if source.len() > MAX_ACTIVE_SOURCE_LEN {
        return Err(ActiveError::TooLong {
            len: source.len(),
            max: MAX_ACTIVE_SOURCE_LEN,
        });
    }
    Ok(Tuple::new([
        Value::Str(ACTIVE_TAG.into()),
        Value::Str(name.into()),
        Value::Str(source.into()),
    ])
    .expect("short strings and a checked source form a valid 3-tuple"))
}

/// The template of active tuples: `("AGENT", ?str, ?str)`.
pub fn template() -> Template {
    Template::new([
        Field::Actual(Value::Str(ACTIVE_TAG.into())),
        Field::Formal(Some(TypeCode::Str)),
        Field::Formal(Some(TypeCode::Str)),
    ])
    .expect("a 3-field template")
}

/// `(name, source)` when `tuple` has the shape of an active tuple.
pub fn decode(tuple: &Tuple) -> Option<(&str, &str)> {
    match tuple.values() {
        [Value::Str(tag), Value::Str(name), Value::Str(source)] if tag == ACTIVE_TAG => {
            Some((name, source))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beets_core::Message;
    use std::num::NonZeroU16;

    #[test]
    fn largest_active_tuple_fits_a_udp_message() {
        let name = "n".repeat(MAX_ACTIVE_NAME_LEN);
        let t = encode(&name, &"s".repeat(MAX_ACTIVE_SOURCE_LEN)).unwrap();
        let msg = Message::Out {
            tuple: t,
            lifetime: NonZeroU16::new(60),
        };
        assert_eq!(msg.buffer_len(), udp::MAX_MESSAGE_LEN);
        assert_eq!(MAX_ACTIVE_SOURCE_LEN, 1192);
    }

    #[test]
    fn encode_rejects_long_source_and_bad_name() {
        assert_eq!(
            encode("x", &"a".repeat(1193)),
            Err(ActiveError::TooLong {
                len: 1193,
                max: 1192
            })
        );
        assert!(matches!(encode("", "x"), Err(ActiveError::BadName { .. })));
        assert!(matches!(
            encode(&"n".repeat(17), "x"),
            Err(ActiveError::BadName { .. })
        ));
    }

    #[test]
    fn decode_round_trips() {
        let t = encode("a", "1").unwrap();
        assert_eq!(decode(&t), Some(("a", "1")));
        assert_eq!(decode(&"(\"AGENT\", \"a\")".parse().unwrap()), None);
    }
}
