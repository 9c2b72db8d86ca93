//! The byte format between an [`AgentRuntime`](crate::AgentRuntime) and its agent worker
//! process: length-prefixed frames of little-endian fields. Private to the crate; both ends are
//! always the same build.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use beets_core::{Field, PeerAddr, Received, Template, Time, Transport, Tuple, TypeCode, Value};

use crate::action::Token;
use crate::action::{
    Action, AgentEvent, AgentId, Completion, HostQuery, RequestOp, SpaceId, TupleKind,
};
use crate::config::{ActivePolicy, HostConfig, Limits, Protection, SpaceSpec};
use crate::error::{Fault, FaultKind};
use crate::host::{AgentInfo, HostStats, RuleFilter};
use beets_core::node::Scope;
use beets_core::space::DeliveryKinds;

/// Largest frame accepted (a load carries at most 64 KiB of source).
const MAX_FRAME: usize = 16 << 20;

pub(crate) fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

pub(crate) fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed agent worker frame")
}

/// Appends fields.
#[derive(Default)]
pub(crate) struct W(pub(crate) Vec<u8>);

/// Reads fields.
pub(crate) struct R<'a>(pub(crate) &'a [u8]);

impl W {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn usize(&mut self, v: usize) -> &mut Self {
        self.u64(v as u64)
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub(crate) fn dur(&mut self, v: Duration) -> &mut Self {
        self.u64(u64::try_from(v.as_micros()).unwrap_or(u64::MAX))
    }
    pub(crate) fn opt_dur(&mut self, v: Option<Duration>) -> &mut Self {
        match v {
            Some(d) => self.u8(1).dur(d),
            None => self.u8(0),
        }
    }
    pub(crate) fn time(&mut self, v: Time) -> &mut Self {
        self.u64(v.as_millis())
    }
    pub(crate) fn opt_time(&mut self, v: Option<Time>) -> &mut Self {
        match v {
            Some(t) => self.u8(1).time(t),
            None => self.u8(0),
        }
    }
    pub(crate) fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::Int16(i) => self.u8(0).u32(*i as u16 as u32),
            Value::Float32(f) => self.u8(1).u32(f.to_bits()),
            Value::Str(s) => self.u8(2).str(s),
            Value::Bytes(b) => self.u8(3).bytes(b),
        }
    }
    pub(crate) fn tuple(&mut self, t: &Tuple) -> &mut Self {
        self.u8(t.arity() as u8);
        for v in t.values() {
            self.value(v);
        }
        self
    }
    pub(crate) fn template(&mut self, t: &Template) -> &mut Self {
        self.u8(t.arity() as u8);
        for f in t.fields() {
            match f {
                Field::Actual(v) => {
                    self.u8(0).value(v);
                }
                Field::Formal(None) => {
                    self.u8(1);
                }
                Field::Formal(Some(c)) => {
                    self.u8(2).u8(*c as u8);
                }
            }
        }
        self
    }
    pub(crate) fn peer(&mut self, p: &PeerAddr) -> &mut Self {
        match p {
            PeerAddr::Ble(a) => self.u8(0).bytes(a),
            PeerAddr::Ip(a) => self.u8(1).str(&a.to_string()),
            PeerAddr::Mqtt(id) => self.u8(2).u32(id.get()),
        }
    }
    pub(crate) fn opt_peer(&mut self, p: Option<&PeerAddr>) -> &mut Self {
        match p {
            Some(p) => self.u8(1).peer(p),
            None => self.u8(0),
        }
    }
    pub(crate) fn received(&mut self, r: &Received) -> &mut Self {
        self.peer(&r.from).time(r.at);
        match r.rssi {
            Some(x) => self.u8(1).u32(x as u16 as u32),
            None => self.u8(0),
        }
    }
    pub(crate) fn opt_received(&mut self, r: Option<&Received>) -> &mut Self {
        match r {
            Some(r) => self.u8(1).received(r),
            None => self.u8(0),
        }
    }
    pub(crate) fn limits(&mut self, l: &Limits) -> &mut Self {
        self.usize(l.memory)
            .usize(l.stack)
            .dur(l.event_budget)
            .dur(l.load_budget)
            .u32(l.max_faults)
            .usize(l.max_source_len)
            .usize(l.max_rules)
            .usize(l.max_actions_per_event)
            .usize(l.max_pending)
            .usize(l.max_jobs_per_event)
            .usize(l.max_logs_per_event)
            .usize(l.max_log_len)
            .dur(l.min_timer)
            .dur(l.max_timeout)
            .dur(l.cpu_share)
            .dur(l.share_window)
            .usize(l.max_logs_per_window)
    }
    pub(crate) fn opt_limits(&mut self, l: Option<&Limits>) -> &mut Self {
        match l {
            Some(l) => self.u8(1).limits(l),
            None => self.u8(0),
        }
    }
    pub(crate) fn host_config(&mut self, c: &HostConfig) -> &mut Self {
        self.u32(c.spaces.len() as u32);
        for s in &c.spaces {
            self.str(&s.name)
                .usize(s.max_message_len)
                .bool(s.keyed)
                .bool(s.sealed);
        }
        self.limits(&c.limits);
        let a = &c.active;
        self.bool(a.enabled).u8(match a.require {
            Protection::None => 0,
            Protection::Keyed => 1,
            Protection::Sealed => 2,
        });
        self.u32(a.spaces.len() as u32);
        for s in &a.spaces {
            self.str(s);
        }
        self.usize(a.max_agents)
            .usize(a.max_source_len)
            .dur(a.min_load_interval)
            .limits(&a.limits)
            .usize(c.action_queue)
            .usize(c.event_queue)
    }
    pub(crate) fn fault(&mut self, f: &Fault) -> &mut Self {
        let k = match f.kind {
            FaultKind::Exception => 0,
            FaultKind::Budget => 1,
            FaultKind::Memory => 2,
            FaultKind::Stack => 3,
            FaultKind::RunawayJobs => 4,
            FaultKind::UnhandledRejection => 5,
            FaultKind::Share => 6,
            FaultKind::Stuck => 7,
        };
        self.u8(k).str(&f.during).str(&f.message)
    }
    pub(crate) fn action(&mut self, a: &Action) -> &mut Self {
        match a {
            Action::Out {
                agent,
                space,
                tuple,
                lifetime,
            } => self
                .u8(0)
                .u32(agent.0)
                .u8(space.0)
                .tuple(tuple)
                .opt_dur(*lifetime),
            Action::Notify {
                agent,
                space,
                tuple,
            } => self.u8(1).u32(agent.0).u8(space.0).tuple(tuple),
            Action::Request {
                agent,
                token,
                space,
                op,
                template,
                timeout,
                scope,
            } => self
                .u8(2)
                .u32(agent.0)
                .u64(token.0)
                .u8(space.0)
                .u8(*op as u8)
                .template(template)
                .dur(*timeout)
                .u8(match scope {
                    Scope::Network => 0,
                    Scope::Local => 1,
                    Scope::Both => 2,
                }),
            Action::HostOut {
                agent,
                space,
                tuple,
                lifetime,
            } => self
                .u8(3)
                .u32(agent.0)
                .u8(space.0)
                .tuple(tuple)
                .opt_dur(*lifetime),
            Action::Host {
                agent,
                token,
                space,
                query,
                template,
            } => self
                .u8(4)
                .u32(agent.0)
                .u64(token.0)
                .u8(space.0)
                .u8(match query {
                    HostQuery::Rd => 0,
                    HostQuery::Inp => 1,
                    HostQuery::Count => 2,
                    HostQuery::Rm => 3,
                    HostQuery::RdAll => 4,
                    HostQuery::InpAll => 5,
                })
                .template(template),
        }
    }
    pub(crate) fn event(&mut self, e: &AgentEvent) -> &mut Self {
        match e {
            AgentEvent::Loaded { agent, name, from } => {
                self.u8(0).u32(agent.0).str(name).opt_peer(from.as_ref())
            }
            AgentEvent::Fault {
                agent,
                name,
                fault,
                count,
            } => self.u8(1).u32(agent.0).str(name).fault(fault).u32(*count),
            AgentEvent::Disabled {
                agent,
                name,
                faults,
            } => self.u8(2).u32(agent.0).str(name).u32(*faults),
            AgentEvent::Log {
                agent,
                name,
                message,
            } => self.u8(3).u32(agent.0).str(name).str(message),
            AgentEvent::ActiveRefused { from, name, reason } => {
                self.u8(4).opt_peer(from.as_ref()).str(name).str(reason)
            }
        }
    }
    pub(crate) fn completion(&mut self, c: &Completion) -> &mut Self {
        match c {
            Completion::Tuple(None) => self.u8(0),
            Completion::Tuple(Some((t, rx))) => self.u8(1).tuple(t).opt_received(rx.as_ref()),
            Completion::Count(n) => self.u8(2).usize(*n),
            Completion::Failed(s) => self.u8(3).str(s),
            Completion::Tuples(ts) => {
                self.u8(4).usize(ts.len());
                for t in ts {
                    self.tuple(t);
                }
                self
            }
        }
    }
    pub(crate) fn stats(&mut self, s: &HostStats) -> &mut Self {
        for v in [
            s.tuples,
            s.consumed,
            s.requests,
            s.refused,
            s.faults,
            s.disabled,
            s.actions,
            s.actions_dropped,
            s.events_dropped,
            s.active_started,
            s.active_refused,
            s.decisions_late,
            s.late_actions_dropped,
            s.questions_busy,
            s.removals_busy,
            s.share_exceeded,
            s.throttled_events,
            s.logs_dropped,
            s.stuck,
            s.worker_restarts,
        ] {
            self.u64(v);
        }
        self
    }
    pub(crate) fn info(&mut self, i: &AgentInfo) -> &mut Self {
        self.u32(i.id.0)
            .str(&i.name)
            .bool(i.enabled)
            .u32(i.faults)
            .usize(i.memory);
        match &i.active_from {
            None => self.u8(0),
            Some(p) => self.u8(1).opt_peer(p.as_ref()),
        }
    }
    pub(crate) fn filter(&mut self, f: &RuleFilter) -> &mut Self {
        for per_space in [&f.out_templates, &f.notify_templates] {
            self.u32(per_space.len() as u32);
            for ts in per_space {
                self.u32(ts.len() as u32);
                for t in ts {
                    self.template(t);
                }
            }
        }
        self.u32(f.requests.len() as u32);
        for r in &f.requests {
            self.bool(*r);
        }
        self.u32(f.removal_templates.len() as u32);
        for ts in &f.removal_templates {
            self.u32(ts.len() as u32);
            for (t, kinds) in ts {
                self.template(t).u8(removal_bits(*kinds));
            }
        }
        self
    }
}

impl R<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn bool(&mut self) -> io::Result<bool> {
        Ok(self.u8()? != 0)
    }
    pub(crate) fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| bad())?,
        ))
    }
    pub(crate) fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| bad())?,
        ))
    }
    pub(crate) fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| bad())
    }
    pub(crate) fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn str(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| bad())
    }
    pub(crate) fn dur(&mut self) -> io::Result<Duration> {
        Ok(Duration::from_micros(self.u64()?))
    }
    pub(crate) fn opt_dur(&mut self) -> io::Result<Option<Duration>> {
        Ok(if self.bool()? {
            Some(self.dur()?)
        } else {
            None
        })
    }
    pub(crate) fn time(&mut self) -> io::Result<Time> {
        Ok(Time::from_millis(self.u64()?))
    }
    pub(crate) fn opt_time(&mut self) -> io::Result<Option<Time>> {
        Ok(if self.bool()? {
            Some(self.time()?)
        } else {
            None
        })
    }
    pub(crate) fn value(&mut self) -> io::Result<Value> {
        Ok(match self.u8()? {
            0 => Value::Int16(self.u32()? as u16 as i16),
            1 => Value::Float32(f32::from_bits(self.u32()?)),
            2 => Value::Str(self.str()?.into()),
            3 => Value::Bytes(self.bytes()?),
            _ => return Err(bad()),
        })
    }
    pub(crate) fn tuple(&mut self) -> io::Result<Tuple> {
        let n = self.u8()?;
        let vs = (0..n)
            .map(|_| self.value())
            .collect::<io::Result<Vec<_>>>()?;
        Tuple::new(vs).map_err(|_| bad())
    }
    pub(crate) fn template(&mut self) -> io::Result<Template> {
        let n = self.u8()?;
        let mut fs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            fs.push(match self.u8()? {
                0 => Field::Actual(self.value()?),
                1 => Field::Formal(None),
                2 => Field::Formal(Some(match self.u8()? {
                    0b01 => TypeCode::Int16,
                    0b10 => TypeCode::Float32,
                    0b11 => TypeCode::Str,
                    _ => return Err(bad()),
                })),
                _ => return Err(bad()),
            });
        }
        Template::new(fs).map_err(|_| bad())
    }
    pub(crate) fn peer(&mut self) -> io::Result<PeerAddr> {
        Ok(match self.u8()? {
            0 => PeerAddr::Ble(self.bytes()?.try_into().map_err(|_| bad())?),
            1 => PeerAddr::Ip(self.str()?.parse::<SocketAddr>().map_err(|_| bad())?),
            2 => PeerAddr::Mqtt(beets_core::udp::NodeId::new(self.u32()?).ok_or_else(bad)?),
            _ => return Err(bad()),
        })
    }
    pub(crate) fn opt_peer(&mut self) -> io::Result<Option<PeerAddr>> {
        Ok(if self.bool()? {
            Some(self.peer()?)
        } else {
            None
        })
    }
    pub(crate) fn received(&mut self) -> io::Result<Received> {
        let from = self.peer()?;
        let at = self.time()?;
        let rssi = if self.bool()? {
            Some(self.u32()? as u16 as i16)
        } else {
            None
        };
        Ok(Received { from, at, rssi })
    }
    pub(crate) fn opt_received(&mut self) -> io::Result<Option<Received>> {
        Ok(if self.bool()? {
            Some(self.received()?)
        } else {
            None
        })
    }
    pub(crate) fn limits(&mut self) -> io::Result<Limits> {
        Ok(Limits {
            memory: self.usize()?,
            stack: self.usize()?,
            event_budget: self.dur()?,
            load_budget: self.dur()?,
            max_faults: self.u32()?,
            max_source_len: self.usize()?,
            max_rules: self.usize()?,
            max_actions_per_event: self.usize()?,
            max_pending: self.usize()?,
            max_jobs_per_event: self.usize()?,
            max_logs_per_event: self.usize()?,
            max_log_len: self.usize()?,
            min_timer: self.dur()?,
            max_timeout: self.dur()?,
            cpu_share: self.dur()?,
            share_window: self.dur()?,
            max_logs_per_window: self.usize()?,
        })
    }
    pub(crate) fn opt_limits(&mut self) -> io::Result<Option<Limits>> {
        Ok(if self.bool()? {
            Some(self.limits()?)
        } else {
            None
        })
    }
    pub(crate) fn host_config(&mut self) -> io::Result<HostConfig> {
        let n = self.u32()?;
        let mut spaces = Vec::new();
        for _ in 0..n {
            let mut s = SpaceSpec::new(self.str()?, Transport::Udp);
            s.max_message_len = self.usize()?;
            s.keyed = self.bool()?;
            s.sealed = self.bool()?;
            spaces.push(s);
        }
        let mut c = HostConfig::new(spaces);
        c.limits = self.limits()?;
        let enabled = self.bool()?;
        let require = match self.u8()? {
            0 => Protection::None,
            1 => Protection::Keyed,
            2 => Protection::Sealed,
            n => return Err(io::Error::other(format!("unknown protection code {n}"))),
        };
        let n = self.u32()?;
        let names = (0..n).map(|_| self.str()).collect::<io::Result<Vec<_>>>()?;
        c.active = ActivePolicy {
            enabled,
            require,
            spaces: names,
            max_agents: self.usize()?,
            max_source_len: self.usize()?,
            min_load_interval: self.dur()?,
            limits: self.limits()?,
        };
        c.action_queue = self.usize()?;
        c.event_queue = self.usize()?;
        Ok(c)
    }
    pub(crate) fn fault(&mut self) -> io::Result<Fault> {
        let kind = match self.u8()? {
            0 => FaultKind::Exception,
            1 => FaultKind::Budget,
            2 => FaultKind::Memory,
            3 => FaultKind::Stack,
            4 => FaultKind::RunawayJobs,
            5 => FaultKind::UnhandledRejection,
            6 => FaultKind::Share,
            7 => FaultKind::Stuck,
            _ => return Err(bad()),
        };
        Ok(Fault {
            kind,
            during: self.str()?,
            message: self.str()?,
        })
    }
    fn space(&mut self) -> io::Result<SpaceId> {
        Ok(SpaceId(self.u8()?))
    }
    fn agent(&mut self) -> io::Result<AgentId> {
        Ok(AgentId(self.u32()?))
    }
    pub(crate) fn action(&mut self) -> io::Result<Action> {
        Ok(match self.u8()? {
            0 => Action::Out {
                agent: self.agent()?,
                space: self.space()?,
                tuple: self.tuple()?,
                lifetime: self.opt_dur()?,
            },
            1 => Action::Notify {
                agent: self.agent()?,
                space: self.space()?,
                tuple: self.tuple()?,
            },
            2 => Action::Request {
                agent: self.agent()?,
                token: Token(self.u64()?),
                space: self.space()?,
                op: match self.u8()? {
                    0 => RequestOp::Rd,
                    1 => RequestOp::Inp,
                    _ => RequestOp::Test,
                },
                template: self.template()?,
                timeout: self.dur()?,
                scope: match self.u8()? {
                    0 => Scope::Network,
                    1 => Scope::Local,
                    2 => Scope::Both,
                    _ => return Err(bad()),
                },
            },
            3 => Action::HostOut {
                agent: self.agent()?,
                space: self.space()?,
                tuple: self.tuple()?,
                lifetime: self.opt_dur()?,
            },
            4 => Action::Host {
                agent: self.agent()?,
                token: Token(self.u64()?),
                space: self.space()?,
                query: match self.u8()? {
                    0 => HostQuery::Rd,
                    1 => HostQuery::Inp,
                    2 => HostQuery::Count,
                    3 => HostQuery::Rm,
                    4 => HostQuery::RdAll,
                    5 => HostQuery::InpAll,
                    _ => return Err(bad()),
                },
                template: self.template()?,
            },
            _ => return Err(bad()),
        })
    }
    pub(crate) fn event(&mut self) -> io::Result<AgentEvent> {
        Ok(match self.u8()? {
            0 => AgentEvent::Loaded {
                agent: self.agent()?,
                name: self.str()?,
                from: self.opt_peer()?,
            },
            1 => AgentEvent::Fault {
                agent: self.agent()?,
                name: self.str()?,
                fault: self.fault()?,
                count: self.u32()?,
            },
            2 => AgentEvent::Disabled {
                agent: self.agent()?,
                name: self.str()?,
                faults: self.u32()?,
            },
            3 => AgentEvent::Log {
                agent: self.agent()?,
                name: self.str()?,
                message: self.str()?,
            },
            4 => AgentEvent::ActiveRefused {
                from: self.opt_peer()?,
                name: self.str()?,
                reason: self.str()?,
            },
            _ => return Err(bad()),
        })
    }
    pub(crate) fn completion(&mut self) -> io::Result<Completion> {
        Ok(match self.u8()? {
            0 => Completion::Tuple(None),
            1 => Completion::Tuple(Some((self.tuple()?, self.opt_received()?))),
            2 => Completion::Count(self.usize()?),
            3 => Completion::Failed(self.str()?),
            4 => {
                let n = self.usize()?;
                let mut ts = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    ts.push(self.tuple()?);
                }
                Completion::Tuples(ts)
            }
            _ => return Err(bad()),
        })
    }
    pub(crate) fn stats(&mut self) -> io::Result<HostStats> {
        let mut s = HostStats::default();
        for v in [
            &mut s.tuples,
            &mut s.consumed,
            &mut s.requests,
            &mut s.refused,
            &mut s.faults,
            &mut s.disabled,
            &mut s.actions,
            &mut s.actions_dropped,
            &mut s.events_dropped,
            &mut s.active_started,
            &mut s.active_refused,
            &mut s.decisions_late,
            &mut s.late_actions_dropped,
            &mut s.questions_busy,
            &mut s.removals_busy,
            &mut s.share_exceeded,
            &mut s.throttled_events,
            &mut s.logs_dropped,
            &mut s.stuck,
            &mut s.worker_restarts,
        ] {
            *v = self.u64()?;
        }
        Ok(s)
    }
    pub(crate) fn info(&mut self) -> io::Result<AgentInfo> {
        Ok(AgentInfo {
            id: self.agent()?,
            name: self.str()?,
            enabled: self.bool()?,
            faults: self.u32()?,
            memory: self.usize()?,
            active_from: if self.bool()? {
                Some(self.opt_peer()?)
            } else {
                None
            },
        })
    }
    pub(crate) fn filter(&mut self) -> io::Result<RuleFilter> {
        let mut lists = Vec::new();
        for _ in 0..2 {
            let n = self.u32()?;
            let mut per_space = Vec::new();
            for _ in 0..n {
                let m = self.u32()?;
                per_space.push(
                    (0..m)
                        .map(|_| self.template())
                        .collect::<io::Result<Vec<_>>>()?,
                );
            }
            lists.push(per_space);
        }
        let n = self.u32()?;
        let requests = (0..n)
            .map(|_| self.bool())
            .collect::<io::Result<Vec<_>>>()?;
        let n = self.u32()?;
        let mut removal_templates = Vec::new();
        for _ in 0..n {
            let m = self.u32()?;
            removal_templates.push(
                (0..m)
                    .map(|_| Ok((self.template()?, removal_kinds(self.u8()?))))
                    .collect::<io::Result<Vec<_>>>()?,
            );
        }
        let notify_templates = lists.pop().unwrap_or_default();
        let out_templates = lists.pop().unwrap_or_default();
        Ok(RuleFilter {
            out_templates,
            requests,
            notify_templates,
            removal_templates,
        })
    }
}

/// The removal kinds of a set, one bit each in [`TupleKind`] order.
fn removal_bits(kinds: DeliveryKinds) -> u8 {
    TupleKind::ALL
        .iter()
        .filter(|k| k.removal().is_some_and(|d| kinds.contains(d)))
        .fold(0, |bits, k| bits | k.bit())
}

/// The inverse of [`removal_bits`].
fn removal_kinds(bits: u8) -> DeliveryKinds {
    TupleKind::ALL
        .iter()
        .filter(|k| bits & k.bit() != 0)
        .filter_map(|k| k.removal())
        .fold(DeliveryKinds::NONE, |set, k| set | k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_sender_crosses_to_the_worker() {
        let id = beets_core::udp::NodeId::new(0x1a2b_3c4d).unwrap();
        for p in [
            PeerAddr::Ble([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x01]),
            PeerAddr::Ip("127.0.0.1:49737".parse().unwrap()),
            PeerAddr::Mqtt(id),
        ] {
            let mut w = W::default();
            w.peer(&p);
            assert_eq!(R(&w.0).peer().unwrap(), p);
        }
        assert_eq!(PeerAddr::Mqtt(id).to_string(), "mqtt:1a2b3c4d");
    }

    #[test]
    fn scoped_requests_bulk_queries_and_their_tuples_cross_to_the_worker() {
        let template: beets_core::Template = "(\"A\", ?int16)".parse().unwrap();
        for scope in [Scope::Network, Scope::Local, Scope::Both] {
            let a = Action::Request {
                agent: AgentId(3),
                token: crate::action::Token(9),
                space: SpaceId(1),
                op: RequestOp::Inp,
                template: template.clone(),
                timeout: std::time::Duration::from_secs(10),
                scope,
            };
            let mut w = W::default();
            w.action(&a);
            assert_eq!(R(&w.0).action().unwrap(), a);
        }
        for query in [HostQuery::RdAll, HostQuery::InpAll] {
            let a = Action::Host {
                agent: AgentId(3),
                token: crate::action::Token(10),
                space: SpaceId(0),
                query,
                template: template.clone(),
            };
            let mut w = W::default();
            w.action(&a);
            assert_eq!(R(&w.0).action().unwrap(), a);
        }
        for c in [
            Completion::Tuples(vec![]),
            Completion::Tuples(vec![
                "(\"A\", 1)".parse().unwrap(),
                "(\"A\", 2)".parse().unwrap(),
            ]),
            Completion::Tuple(Some(("(\"A\", 1)".parse().unwrap(), None))),
        ] {
            let mut w = W::default();
            w.completion(&c);
            assert_eq!(R(&w.0).completion().unwrap(), c);
        }
        // An unknown scope or query byte is an error, not a guess.
        let mut w = W::default();
        w.action(&Action::Request {
            agent: AgentId(3),
            token: crate::action::Token(9),
            space: SpaceId(1),
            op: RequestOp::Rd,
            template,
            timeout: std::time::Duration::from_secs(1),
            scope: Scope::Both,
        });
        *w.0.last_mut().unwrap() = 7;
        assert!(R(&w.0).action().is_err());
    }

    #[test]
    fn removal_rules_of_the_filter_cross_back_from_the_worker() {
        use beets_core::DeliveryKind as K;
        let t = |s: &str| -> beets_core::Template { s.parse().unwrap() };
        let f = RuleFilter {
            out_templates: vec![vec![t("(\"O\", ?)")], vec![]],
            requests: vec![false, true],
            notify_templates: vec![vec![], vec![t("(?)")]],
            removal_templates: vec![
                vec![
                    (t("(\"R\", ?)"), DeliveryKinds::REMOVALS),
                    (t("(?, ?, ?)"), DeliveryKinds::only(K::Inp) | K::Expired),
                ],
                vec![(t("(\"E\")"), DeliveryKinds::only(K::Evicted))],
            ],
        };
        let mut w = W::default();
        w.filter(&f);
        assert_eq!(R(&w.0).filter().unwrap(), f);
        for kind in TupleKind::ALL {
            assert_eq!(TupleKind::from_index(kind as u8), Some(kind));
        }
        assert_eq!(TupleKind::from_index(6), None);
    }
}
