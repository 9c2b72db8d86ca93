//! Errors of loading an agent, and the faults a running agent can commit.

use std::fmt;

/// Why an agent could not be loaded. Nothing of it keeps running.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The source is longer than the limit.
    #[error("agent source has {len} bytes, the limit is {max} (Limits::max_source_len)")]
    SourceTooLong {
        /// Source length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An agent name must be 1..=64 bytes of printable characters.
    #[error("agent name {0:?} is not 1..=64 printable characters")]
    BadName(String),
    /// QuickJS could not create the runtime or context (the memory limit is too small).
    #[error("could not create the JavaScript runtime: {0} (is Limits::memory too small?)")]
    Runtime(String),
    /// Evaluating the source, or its `init`, faulted.
    #[error("{0}")]
    Fault(Fault),
    /// The source did not evaluate to an agent object.
    #[error("not an agent: {0}")]
    Shape(String),
    /// The host's active-agent limit is reached.
    #[error("{max} active agents are already running (ActivePolicy::max_agents)")]
    TooManyActive {
        /// The limit.
        max: usize,
    },
    /// The agent worker process refused or lost the load; the text is its error.
    #[error("{0}")]
    Worker(String),
}

/// What kind of fault an agent committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// A JavaScript exception escaped a condition, a handler or `init` (including misuse of the
    /// agent API, which throws `TypeError`/`RangeError`).
    Exception,
    /// The CPU budget of the event ran out (the interrupt handler stopped the code).
    Budget,
    /// The memory limit was hit (`InternalError: out of memory`).
    Memory,
    /// The stack limit was hit (`RangeError: Maximum call stack size exceeded`).
    Stack,
    /// More promise jobs than [`Limits::max_jobs_per_event`](crate::Limits) after one event.
    RunawayJobs,
    /// A promise was rejected and nothing handled it (e.g. an `async` handler threw).
    UnhandledRejection,
    /// The agent used more than [`Limits::cpu_share`](crate::Limits::cpu_share) of the CPU over
    /// [`Limits::share_window`](crate::Limits::share_window); it is throttled (its events skipped,
    /// its request filters refusing) until the window ends.
    Share,
    /// A call into the agent ran past its budget plus the watchdog's grace without returning
    /// (inside native code, where the interrupt handler is not polled): with process isolation
    /// its worker process was killed and restarted without it. The agent is disabled at once.
    Stuck,
}

impl FaultKind {
    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Exception => "exception",
            FaultKind::Budget => "cpu budget exceeded",
            FaultKind::Memory => "memory limit exceeded",
            FaultKind::Stack => "stack limit exceeded",
            FaultKind::RunawayJobs => "runaway promise jobs",
            FaultKind::UnhandledRejection => "unhandled promise rejection",
            FaultKind::Share => "cpu share exceeded",
            FaultKind::Stuck => "stuck past its budget",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault: what went wrong, where, and the JavaScript message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The kind.
    pub kind: FaultKind,
    /// Where: `load`, `init`, `ts rule 0 on ble-ts`, `timer rule 2`, `promise jobs`…
    pub during: String,
    /// The exception's message (cut to 512 bytes), or a description of the limit.
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} during {}: {}", self.kind, self.during, self.message)
    }
}

impl std::error::Error for Fault {}
