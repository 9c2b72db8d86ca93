//! The limits around every call into an agent: its intrinsics, the CPU deadline the interrupt
//! handler enforces, and how an error becomes a [`Fault`].

use std::cell::Cell;
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::{Ctx, Exception};

use crate::api;
use crate::error::{Fault, FaultKind};

type JsValue<'js> = rquickjs::Value<'js>;

/// Longest fault message kept.
const MAX_FAULT_MESSAGE: usize = 512;

/// The intrinsics an agent gets: no `Proxy`, `WeakRef`, `performance` or `DOMException`; no
/// module loader, so `import()` always rejects; `std`, `os`, `require`, `fetch` do not exist.
pub(crate) type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
);

/// The CPU deadline, shared with the interrupt handler.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    pub(crate) deadline: Cell<Option<Instant>>,
    budget: Cell<Duration>,
    pub(crate) tripped: Cell<bool>,
}

impl Guard {
    pub(crate) fn arm(&self, budget: Duration) {
        self.tripped.set(false);
        self.budget.set(budget);
        self.deadline.set(Some(Instant::now() + budget));
    }

    /// The budget, if the interrupt handler stopped the code.
    pub(crate) fn tripped(&self) -> Option<Duration> {
        self.tripped.get().then(|| self.budget.get())
    }

    pub(crate) fn disarm(&self) {
        self.deadline.set(None);
    }
}

/// Describes a thrown value without trusting it: strings and `Error`s give their text, anything
/// else its type.
pub(crate) fn describe<'js>(ctx: &Ctx<'js>, v: JsValue<'js>) -> String {
    let mut s = if let Some(s) = v.as_string() {
        s.to_string()
            .unwrap_or_else(|_| "a string that is not UTF-8".into())
    } else if let Some(e) = v.clone().into_object().and_then(Exception::from_object) {
        let name: Option<String> = e.get("name").ok();
        let message = e.message().unwrap_or_default();
        let at = e.stack().and_then(|s| {
            s.lines()
                .map(str::trim)
                .find(|l| l.starts_with("at "))
                .map(String::from)
        });
        // A getter that threw leaves an exception pending: drop it.
        let _ = ctx.catch();
        let mut s = match name {
            Some(n) if !n.is_empty() => format!("{n}: {message}"),
            _ => message,
        };
        if let Some(at) = at {
            s.push_str(" (");
            s.push_str(&at);
            s.push(')');
        }
        s
    } else if let Some(n) = v.as_number() {
        format!("thrown number {n}")
    } else {
        format!("thrown {}", v.type_name())
    };
    api::truncate(&mut s, MAX_FAULT_MESSAGE);
    s
}

pub(crate) fn fault_from(
    ctx: &Ctx<'_>,
    err: rquickjs::Error,
    tripped: Option<Duration>,
    during: String,
) -> Fault {
    let message = match err {
        rquickjs::Error::Exception => describe(ctx, ctx.catch()),
        rquickjs::Error::Allocation => "out of memory".into(),
        other => other.to_string(),
    };
    let kind = if tripped.is_some() {
        FaultKind::Budget
    } else if message.contains("out of memory") {
        FaultKind::Memory
    } else if message.contains("Maximum call stack size exceeded") {
        FaultKind::Stack
    } else {
        FaultKind::Exception
    };
    Fault {
        kind,
        during,
        message: match tripped {
            Some(budget) => format!("stopped by the CPU budget of {budget:?}"),
            None => message,
        },
    }
}
