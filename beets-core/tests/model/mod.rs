//! Pieces shared by the model-checked tests (`space_model.rs`, `local_waits_model.rs`).

use beets_core::Template;
use beets_core::parse_template;
use proptest::prelude::*;

/// A template `(k | ?, v | ?)` over the 2-tuples `(k, v)` the models store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pat(pub(crate) Option<u8>, pub(crate) Option<u8>);

impl Pat {
    /// The template in the space's terms.
    pub(crate) fn template(self) -> Template {
        let f = |x: Option<u8>| x.map_or_else(|| "?".to_owned(), |x| x.to_string());
        parse_template(&format!("({}, {})", f(self.0), f(self.1))).unwrap()
    }

    /// What the model says: does `(k, v)` match?
    pub(crate) fn matches(self, (k, v): (u8, u8)) -> bool {
        self.0.is_none_or(|x| x == k) && self.1.is_none_or(|x| x == v)
    }
}

/// Templates over keys and values 0..3, each field actual or formal.
pub(crate) fn pat() -> impl Strategy<Value = Pat> {
    (proptest::option::of(0u8..3), proptest::option::of(0u8..3)).prop_map(|(a, b)| Pat(a, b))
}
