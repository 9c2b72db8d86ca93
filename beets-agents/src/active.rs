//! Active tuples: agent source carried in a tuple (paper §6, design notes: "agent source can travel
//! in tuples over UDP, encrypted with the space key").
//!
//! An active tuple is `("AGENT", name, version, source)`: the tag [`ACTIVE_TAG`], a name of
//! 1..=16 bytes, a version (int16, 1..=32767) and the JavaScript source as a string. Send it
//! with an ordinary `out` on a UDP space whose nodes share a password (FPE-keyed, spec §5).
//!
//! **What protects it, and what does not.** A host takes an active tuple only with a version
//! newer than every version it has run under that name (so a captured tuple replayed later, or
//! an older version, is refused: no rollback), at most one per
//! [`ActivePolicy::min_load_interval`](crate::ActivePolicy::min_load_interval), and runs it
//! under the same limits and watchdog as any agent. FPE is a per-byte substitution without
//! integrity: whoever has learnt the table from observed traffic can **forge** an active tuple
//! with a higher version, and nothing in an FPE space can tell. Only sealed spaces (spec §12,
//! authenticated encryption) fix forgery; see [`Protection`](crate::Protection) for the switch.
//!
//! A receiving [`AgentHost`](crate::AgentHost) starts it **only** if its
//! [`ActivePolicy`](crate::ActivePolicy) is enabled (off by default), the space is allowed
//! (keyed ones only, by default), the version is new, the rate limit allows it, the source is at most
//! [`ActivePolicy::max_source_len`](crate::ActivePolicy::max_source_len) bytes and fewer than
//! [`ActivePolicy::max_agents`](crate::ActivePolicy::max_agents) active agents run. It is then
//! consumed (not stored) and runs under [`ActivePolicy::limits`](crate::ActivePolicy::limits)
//! with the name `active:<name>`; a new active tuple with the same name replaces it. Active
//! agents can never replace locally loaded ones. With the policy off the tuple is plain data.
//!
//! # Code length limit
//! A UDP message carries at most 1221 bytes (spec §7) and a string value at most 8191 bytes
//! (spec §1); the UDP limit binds. The OUT message of an active tuple takes 1 control byte, 1
//! signature byte, 6 bytes for `"AGENT"`, 1 + *n* bytes for a name of *n* ≤ 16 bytes, 2 bytes
//! for the version, 2 length bytes for the source and 2 bytes of lifetime if one is given, so
//! the source may hold **1221 − 31 = 1190 bytes** whatever the name and lifetime
//! ([`MAX_ACTIVE_SOURCE_LEN`]), up to 1206 with a 1-byte name and no lifetime. Minify larger agents or load them from a file.

use beets_core::{Field, Template, Tuple, TypeCode, Value, udp};

/// First element of an active tuple.
pub const ACTIVE_TAG: &str = "AGENT";

/// Longest name of an active agent, in bytes.
pub const MAX_ACTIVE_NAME_LEN: usize = 16;

/// Longest source an active tuple can carry for any name of ≤ 16 bytes, with or without a
/// lifetime: 1221 − (1 + 1 + 6 + 17 + 2 + 2 + 2) = 1190 bytes (see the module docs).
pub const MAX_ACTIVE_SOURCE_LEN: usize =
    udp::MAX_MESSAGE_LEN - (1 + 1 + (1 + ACTIVE_TAG.len()) + (1 + MAX_ACTIVE_NAME_LEN) + 2 + 2 + 2);

/// Why an active tuple could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActiveError {
    /// The version is not 1..=32767.
    #[error("active agent version {0} is not 1..=32767")]
    BadVersion(i16),
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

/// Builds the active tuple `("AGENT", name, version, source)`, checking the limits above.
///
/// ```
/// let t = beets_agents::active::encode("hello", 2, "({ rules: [] })").unwrap();
/// assert_eq!(t.to_string(), r#"("AGENT", "hello", 2, "({ rules: [] })")"#);
/// assert!(beets_agents::active::encode("x", 1, &"a".repeat(1191)).is_err());
/// ```
///
/// # Errors
/// [`ActiveError::BadName`], [`ActiveError::BadVersion`] or [`ActiveError::TooLong`].
pub fn encode(name: &str, version: i16, source: &str) -> Result<Tuple, ActiveError> {
    if version < 1 {
        return Err(ActiveError::BadVersion(version));
    }
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
        Value::Int16(version),
        Value::Str(source.into()),
    ])
    .expect("short strings and a checked source form a valid 4-tuple"))
}

/// The template of active tuples: `("AGENT", ?str, ?int16, ?str)`.
pub fn template() -> Template {
    Template::new([
        Field::Actual(Value::Str(ACTIVE_TAG.into())),
        Field::Formal(Some(TypeCode::Str)),
        Field::Formal(Some(TypeCode::Int16)),
        Field::Formal(Some(TypeCode::Str)),
    ])
    .expect("a 4-field template")
}

/// `(name, version, source)` when `tuple` has the shape of an active tuple.
pub fn decode(tuple: &Tuple) -> Option<(&str, i16, &str)> {
    match tuple.values() {
        [
            Value::Str(tag),
            Value::Str(name),
            Value::Int16(version),
            Value::Str(source),
        ] if tag == ACTIVE_TAG => Some((name, *version, source)),
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
        let t = encode(&name, 1, &"s".repeat(MAX_ACTIVE_SOURCE_LEN)).unwrap();
        let msg = Message::Out {
            tuple: t,
            lifetime: NonZeroU16::new(60),
        };
        assert_eq!(msg.buffer_len(), udp::MAX_MESSAGE_LEN);
        assert_eq!(MAX_ACTIVE_SOURCE_LEN, 1190);
    }

    #[test]
    fn encode_rejects_long_source_and_bad_name() {
        assert_eq!(
            encode("x", 1, &"a".repeat(1191)),
            Err(ActiveError::TooLong {
                len: 1191,
                max: 1190
            })
        );
        assert!(matches!(
            encode("", 1, "x"),
            Err(ActiveError::BadName { .. })
        ));
        assert_eq!(encode("x", 0, "x"), Err(ActiveError::BadVersion(0)));
        assert!(matches!(
            encode(&"n".repeat(17), 1, "x"),
            Err(ActiveError::BadName { .. })
        ));
    }

    #[test]
    fn decode_round_trips() {
        let t = encode("a", 3, "1").unwrap();
        assert_eq!(decode(&t), Some(("a", 3, "1")));
        assert_eq!(decode(&"(\"AGENT\", \"a\", \"1\")".parse().unwrap()), None);
    }
}
