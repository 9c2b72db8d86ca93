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
    /// When the call started, for the hard limit.
    armed_at: Instant,
    /// The calling thread (Linux thread id) and its CPU time when the call started: the
    /// watchdog stops only a call that has burned CPU, not one whose thread waited for a CPU
    /// (a loaded or emulated machine).
    thread: Option<(i32, Duration)>,
}

/// However it spends its time, a call is stopped this long after it started (a call blocked
/// without burning CPU is stuck too).
const HARD_LIMIT: Duration = Duration::from_secs(2);

/// The CPU time the thread `tid` of this process has used, from `/proc` (Linux; `None`
/// elsewhere or when unreadable). Precision: one clock tick (10 ms at the usual 100 Hz).
fn thread_cpu(tid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based, proc(5)).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000 / hz),
    ))
}

/// This thread's id and CPU time now.
fn this_thread() -> Option<(i32, Duration)> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let cpu = Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    );
    Some((rustix::thread::gettid().as_raw_nonzero().get(), cpu))
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
                        // Stuck means burning CPU past the budget (or past the hard limit,
                        // whatever it does); a thread that only waited for a CPU gets more time.
                        let burned = a.thread.and_then(|(tid, at)| {
                            thread_cpu(tid).map(|now_cpu| now_cpu.saturating_sub(at))
                        });
                        let spinning = burned.is_none_or(|b| b >= a.budget);
                        if spinning || now >= a.armed_at + HARD_LIMIT {
                            on_stuck(a);
                            return;
                        }
                        let mut g = self.armed.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(current) = g.as_mut()
                            && current.armed_at == a.armed_at
                        {
                            current.kill_at = now + self.grace;
                        }
                        continue;
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
            armed_at: now,
            thread: this_thread(),
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

#[cfg(test)]
mod watchdog_tests {
    use super::*;
    use std::sync::mpsc;

    /// A call whose thread only waits (a loaded or emulated machine) is not taken for stuck;
    /// one that burns CPU past its budget is, soon after budget + grace.
    #[test]
    #[cfg(target_os = "linux")]
    fn only_a_call_that_burns_cpu_is_stuck() {
        let (tx, rx) = mpsc::channel();
        let w = Watchdog::start(Duration::from_millis(20), move |a| {
            let _ = tx.send(a.agent);
        })
        .unwrap();
        // Waiting 200 ms (ten times budget + grace) without burning CPU: not stuck.
        w.arm(1, Instant::now(), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(200));
        w.disarm();
        assert!(
            rx.try_recv().is_err(),
            "a waiting thread was taken for stuck"
        );
        // Spinning: stuck.
        let start = Instant::now();
        w.arm(2, start, Duration::from_millis(10));
        while rx.try_recv().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "a spinning call was not stopped"
            );
            std::hint::spin_loop();
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
