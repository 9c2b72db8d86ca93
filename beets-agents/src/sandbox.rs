//! The limits around every call into an agent: its intrinsics, the CPU deadline the interrupt
//! handler enforces, and how an error becomes a [`Fault`].

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
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
    /// The agent, for the watchdog's report.
    pub(crate) agent: Cell<u32>,
    /// When the current call started, for the CPU share.
    pub(crate) started: Cell<Option<Instant>>,
}

impl Guard {
    pub(crate) fn arm(&self, budget: Duration) {
        let now = Instant::now();
        self.tripped.set(false);
        self.budget.set(budget);
        self.deadline.set(Some(now + budget));
        self.started.set(Some(now));
        if let Some(w) = WATCHDOG.get() {
            w.arm(self.agent.get(), now, budget);
        }
    }

    /// Time since [`Guard::arm`], and forgets the start.
    pub(crate) fn spent(&self) -> Duration {
        self.started.take().map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// The budget, if the interrupt handler stopped the code.
    pub(crate) fn tripped(&self) -> Option<Duration> {
        self.tripped.get().then(|| self.budget.get())
    }

    pub(crate) fn disarm(&self) {
        self.deadline.set(None);
        if let Some(w) = WATCHDOG.get() {
            w.disarm();
        }
    }
}

/// The watchdog of an agent worker process (see [`crate::worker`]), set once there and never in
/// a process that runs agents on a thread of its own.
pub(crate) static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();

/// What the watchdog knows about the call in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Armed {
    pub(crate) agent: u32,
    pub(crate) budget: Duration,
    pub(crate) kill_at: Instant,
}

/// Watches the calls into agents from a thread of its own: a call that has not returned at its
/// budget plus `grace` is stuck where the interrupt handler cannot reach it (native code), and
/// `on_stuck` runs (the worker reports it and exits, which frees the CPU).
pub(crate) struct Watchdog {
    grace: Duration,
    armed: Mutex<Option<Armed>>,
    /// Set while the watchdog sleeps without a timeout: arming must wake it.
    idle: AtomicBool,
    thread: OnceLock<Thread>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Starts the watchdog thread; `on_stuck` runs on it when a call overruns.
    pub(crate) fn start(
        grace: Duration,
        on_stuck: impl FnOnce(Armed) + Send + 'static,
    ) -> std::io::Result<Arc<Watchdog>> {
        let w = Arc::new(Watchdog {
            grace,
            armed: Mutex::new(None),
            idle: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let watched = Arc::clone(&w);
        let handle = std::thread::Builder::new()
            .name("agent-watchdog".into())
            .spawn(move || watched.run(on_stuck))?;
        let _ = w.thread.set(handle.thread().clone());
        Ok(w)
    }

    fn run(&self, on_stuck: impl FnOnce(Armed)) {
        loop {
            let armed = *self.armed.lock().unwrap_or_else(|e| e.into_inner());
            match armed {
                None => {
                    self.idle.store(true, Ordering::SeqCst);
                    // Re-check after announcing the sleep: an arm in between unparks us.
                    if self
                        .armed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_none()
                    {
                        std::thread::park();
                    }
                    self.idle.store(false, Ordering::SeqCst);
                }
                Some(a) => {
                    let now = Instant::now();
                    if now >= a.kill_at {
                        on_stuck(a);
                        return;
                    }
                    std::thread::park_timeout(a.kill_at - now);
                }
            }
        }
    }

    fn arm(&self, agent: u32, now: Instant, budget: Duration) {
        let a = Armed {
            agent,
            budget,
            kill_at: now + budget + self.grace,
        };
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some(a);
        if self.idle.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    fn disarm(&self) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
