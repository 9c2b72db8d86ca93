//! A ready-made router: an agent with `ts` rules on two spaces that forwards matching tuples
//! from one to the other (paper §6: "a router is just an agent with rules on both spaces").
//!
//! [`Router`] is configured by templates and generates the agent's JavaScript:
//!
//! ```
//! use beets_agents::router::Router;
//! let r = Router::new()
//!     .route("ble-ts", "udp-ts", r#"("SENSOR", ?, ?, ?)"#.parse().unwrap())
//!     .route("udp-ts", "ble-ts", r#"("SURVEY", ?, ?)"#.parse().unwrap());
//! assert!(r.source().contains(r#"space: "ble-ts""#));
//! ```
//!
//! Each incoming OUT that matches a route is sent on as an OUT on the other space (a
//! notification as a notification) and, when the route [consumes](Route::consume) (the
//! default), not stored here: the tuple *moves*. A tuple that does not fit the other space
//! (31 bytes on BLE) is not forwarded, stays here, and is logged. The agent counts `forwarded`
//! and `dropped`.
//!
//! Routes in both directions with templates that overlap make tuples bounce between routers;
//! keep the two directions' templates disjoint, as the default does.

use std::fmt::Write;

use beets_core::Template;

/// One forwarding rule.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Route {
    /// Space to listen on.
    pub from: String,
    /// Space to send on.
    pub to: String,
    /// What to forward.
    pub template: Template,
    /// Whether a forwarded OUT is kept from the local space (default `true`).
    pub consume: bool,
    /// Lifetime in seconds for the forwarded OUT (default `None`: the lifetime the OUT came
    /// with, or the receivers' default when it had none).
    pub lifetime: Option<u16>,
}

impl Route {
    /// A consuming route of `template` from space `from` to space `to`, keeping the lifetime
    /// each OUT came with.
    pub fn new(from: impl Into<String>, to: impl Into<String>, template: Template) -> Route {
        Route {
            from: from.into(),
            to: to.into(),
            template,
            consume: true,
            lifetime: None,
        }
    }

    /// Forwards OUTs with this lifetime in seconds instead of the one they came with.
    pub fn lifetime(mut self, seconds: u16) -> Route {
        self.lifetime = Some(seconds);
        self
    }

    /// Keeps forwarded OUTs in the local space too (they are consumed by default).
    pub fn keep_local(mut self) -> Route {
        self.consume = false;
        self
    }
}

/// A router configured by templates; [`Router::source`] is the agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Router {
    /// The routes, tried in order.
    pub routes: Vec<Route>,
}

/// Quotes `s` as a JavaScript string literal.
pub(crate) fn js_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// The paper's beacon (§7): `("SENSOR", ?, ?, ?)` from `ble-ts` to `udp-ts`, and
    /// `("SURVEY", ?)`, `("SURVEY", ?, ?)`, `("SURVEY", ?, ?, ?)` from `udp-ts` to `ble-ts`.
    pub fn ble_udp() -> Router {
        let t = |s: &str| s.parse::<Template>().expect("valid template");
        Router::new()
            .route("ble-ts", "udp-ts", t(r#"("SENSOR", ?, ?, ?)"#))
            .route("udp-ts", "ble-ts", t(r#"("SURVEY", ?)"#))
            .route("udp-ts", "ble-ts", t(r#"("SURVEY", ?, ?)"#))
            .route("udp-ts", "ble-ts", t(r#"("SURVEY", ?, ?, ?)"#))
    }

    /// Adds a consuming route with no lifetime.
    pub fn route(mut self, from: &str, to: &str, template: Template) -> Router {
        self.routes.push(Route::new(from, to, template));
        self
    }

    /// Adds a route.
    pub fn with(mut self, route: Route) -> Router {
        self.routes.push(route);
        self
    }

    /// The agent's JavaScript source.
    pub fn source(&self) -> String {
        let mut rules = String::new();
        for r in &self.routes {
            let lifetime = r.lifetime.map_or("undefined".to_owned(), |l| l.to_string());
            let _ = writeln!(
                rules,
                "    {{ ts: {}, space: {}, handler: forward(spaces[{}], {}, {lifetime}) }},",
                js_string(&r.template.to_string()),
                js_string(&r.from),
                js_string(&r.to),
                r.consume,
            );
        }
        format!(
            r#"(() => {{
  const agent = {{ forwarded: 0, dropped: 0, rules: [] }};
  // A handler that sends the tuple on `to` (a notification as a notification) and returns
  // `consume`; a tuple that does not fit `to` stays here. An OUT keeps the lifetime it came
  // with unless the route sets one.
  const forward = (to, consume, lifetime) => (t, ev) => {{
    try {{
      if (ev.kind === "notify") to.notify(t);
      else to.out(t, lifetime ?? ev.lifetime ?? undefined);
    }} catch (e) {{
      agent.dropped++;
      log("not forwarded to " + to.name + ": " + e.message);
      return false;
    }}
    agent.forwarded++;
    return consume;
  }};
  agent.rules = [
{rules}  ];
  return agent;
}})()
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_string_escapes() {
        assert_eq!(js_string(r#"("A", "b\"")"#), r#""(\"A\", \"b\\\"\")""#);
        assert_eq!(js_string("\u{2028}\u{1}"), r#""\u2028\u0001""#);
    }
}
