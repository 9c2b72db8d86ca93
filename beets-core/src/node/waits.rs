//! Requests that wait (spec §11) and this node's own requests on its local space.
//!
//! **Remote requests that wait.** An RD, INP or TEST with L carries its requester's wait. When
//! the hooks let it through and no stored tuple matches, it becomes a [`Wait`] here, for `wait`
//! seconds from its arrival, keyed by its §8 key ([`PendingKey`]); a repeat of the same key adds
//! nothing. Every tuple the space stores *through the node* — an OUT from the air after the hooks,
//! [`Node::host_out`], [`Node::lease`] — is offered to the waits ([`Node::stored`]): every matching
//! RD and TEST schedules an answer after the §9 back-off, then the oldest matching INP without a
//! held tuple schedules one and holds the tuple (no other waiting INP is offered it). When the
//! back-off ends the space is looked at again: RD and TEST send a copy of what matches then, INP
//! takes its held tuple (or, when that one has gone, the oldest match). With nothing to send the
//! request stays pending until its wait ends. A wait ends as soon as a TUPLE with R = 1 matching
//! its pattern is sent by this node or heard from another ([`Node::finish_waits`]). At most
//! [`NodeConfig::max_waits`] wait; one more drops the one that would expire first, possibly
//! itself (counted).
//!
//! Tuples stored with [`Node::host`]`().out(..)` bypass the node and are **not** offered: use
//! [`Node::host_out`] (or [`Node::lease`]) when requests may be waiting.
//!
//! **Own requests with a scope.** [`Node::request_in`] looks in the local space first
//! ([`Scope::Local`], [`Scope::Both`]); without a match the request waits there until its timeout,
//! and each tuple stored through the node is offered to this node's own waiting requests before
//! the remote ones: every matching RD and TEST gets a copy, then the oldest matching INP takes the
//! tuple out of the space at once. A request whose deadline has come is offered nothing, even
//! before [`Node::handle_timeout`] completed it with none. A request of scope [`Scope::Both`] also
//! goes on the air; the first answer, local or remote, completes it.

use std::num::NonZeroU16;
use std::time::Duration;

use super::{Event, Node, NodeError, Pending, PendingKey, RequestId, Scope};
use crate::message::{Message, Op, RequestOp};
use crate::space::TupleId;
use crate::time::Time;
use crate::tuple::{Template, Tuple};

#[allow(unused_imports)] // named in doc links
use super::NodeConfig;

/// A remote request pending here (spec §11).
#[derive(Debug)]
pub(super) struct Wait {
    pub(super) key: PendingKey,
    pub(super) op: RequestOp,
    pub(super) template: Template,
    /// Arrival + wait, on this node's clock.
    pub(super) expires: Time,
    /// When its scheduled answer is due, if one is.
    pub(super) answer_at: Option<Time>,
    /// The tuple an INP holds (offered to it alone).
    pub(super) held: Option<TupleId>,
}

impl Node {
    /// Asks for `op` on `template` in `scope`, completing within `timeout`: with
    /// [`Event::LocalAnswer`] when the local space answers (at once, or when a matching tuple is
    /// stored later), with [`Event::Completed`] when a reply comes from the air or the timeout
    /// passes (`reply: None`). A local INP takes its tuple
    /// atomically: nothing else sees it in between.
    ///
    /// # Errors
    /// [`NodeError::TooLong`] (a network scope and a template the transport cannot carry) or
    /// [`NodeError::TooManyPending`].
    pub fn request_in(
        &mut self,
        now: Time,
        op: RequestOp,
        template: Template,
        timeout: Duration,
        scope: Scope,
    ) -> Result<RequestId, NodeError> {
        self.clock = now;
        if self.pending.len() >= self.config.max_pending {
            return Err(NodeError::TooManyPending {
                max: self.config.max_pending,
            });
        }
        if scope.local() {
            let found = match op {
                RequestOp::Inp => self.space.inp(now, &template),
                RequestOp::Rd | RequestOp::Test => self.space.rd(now, &template),
            };
            if let Some(tuple) = found {
                let id = self.next_id();
                self.stats.local_answers += 1;
                self.drain_deliveries();
                self.push_event(Event::LocalAnswer {
                    id,
                    op: op.op(),
                    tuple,
                    at: now,
                });
                return Ok(id);
            }
        }
        if scope.network() {
            let msg = self.request_message(op, template.clone(), timeout);
            self.send(&msg)?;
            self.stats.requests_sent += 1;
        }
        let id = self.next_id();
        self.pending.insert(
            id,
            Pending {
                op: op.op(),
                template,
                deadline: now + timeout,
                scope,
            },
        );
        Ok(id)
    }

    pub(super) fn next_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// The request as sent (spec §11 requester): with the wait `min(65535, ⌊timeout⌋ s)`, or
    /// without L when less than a second remains, when waits are off
    /// ([`NodeConfig::send_waits`]) or when the two bytes would not fit the transport.
    pub(super) fn request_message(
        &self,
        op: RequestOp,
        template: Template,
        timeout: Duration,
    ) -> Message {
        let wait = if self.config.send_waits {
            wait_secs(timeout)
        } else {
            None
        };
        let msg = Message::request(op, template, wait);
        if msg.wait().is_some() && msg.buffer_len() > self.config.transport.max_message_len() {
            let Message::Waiting { op, template, .. } = msg else {
                unreachable!("a message with a wait is Waiting")
            };
            return Message::request(op, template, None);
        }
        msg
    }

    /// Offers a tuple just stored through the node to this node's own local waits, then to the
    /// remote waits (spec §11). Cheap when nothing waits: two emptiness checks.
    pub(super) fn stored(&mut self, now: Time, id: TupleId) {
        if self.waits.is_empty() && self.pending.is_empty() {
            return;
        }
        let Some(tuple) = self.space.get(now, id).cloned() else {
            return;
        };
        if !self.pending.is_empty() && self.offer_local(now, id, &tuple) {
            return;
        }
        if self.waits.is_empty() {
            return;
        }
        // Waits that ended before the timer ran are offered nothing.
        self.expire_waits(now);
        // 1. Every matching pending RD and TEST schedules an answer.
        let mut inp = None;
        for i in 0..self.waits.len() {
            let w = &self.waits[i];
            if !w.template.matches(&tuple) {
                continue;
            }
            match w.op {
                RequestOp::Rd | RequestOp::Test if w.answer_at.is_none() => {
                    let at = now + self.backoff(Op::Rd);
                    self.waits[i].answer_at = Some(at);
                }
                RequestOp::Inp if inp.is_none() && w.held.is_none() => inp = Some(i),
                _ => {}
            }
        }
        // 2. The oldest matching INP holds the tuple.
        if let Some(i) = inp {
            let at = now + self.backoff(Op::Inp);
            let w = &mut self.waits[i];
            w.held = Some(id);
            w.answer_at = Some(at);
        }
        self.answer_waits(now);
    }

    /// This node's own waiting requests with a local scope take the offer first: every matching
    /// RD and TEST gets a copy, then the oldest matching INP takes the tuple. `true` when it was
    /// taken. Requests whose deadline has come are not offered anything (they complete with
    /// none when the timer runs).
    fn offer_local(&mut self, now: Time, id: TupleId, tuple: &Tuple) -> bool {
        let mut readers: Vec<RequestId> = Vec::new();
        let mut taker: Option<RequestId> = None;
        for (rid, p) in &self.pending {
            // A request whose deadline has passed gets nothing, even before the timer ran.
            if !p.scope.local() || p.deadline <= now || !p.template.matches(tuple) {
                continue;
            }
            if p.op == Op::Inp {
                if taker.is_none_or(|t| *rid < t) {
                    taker = Some(*rid);
                }
            } else {
                readers.push(*rid);
            }
        }
        readers.sort_unstable();
        for rid in readers {
            self.complete_locally(now, rid, tuple.clone());
        }
        if let Some(rid) = taker
            && let Some(tuple) = self.space.take(now, id)
        {
            self.drain_deliveries();
            self.complete_locally(now, rid, tuple);
            return true;
        }
        false
    }

    fn complete_locally(&mut self, now: Time, id: RequestId, tuple: Tuple) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        self.stats.local_answers += 1;
        let op = p.op;
        if p.scope.network() {
            // Its network part is over: a reply still coming is counted as after a cancel.
            self.remember_cancelled(p);
        }
        self.push_event(Event::LocalAnswer {
            id,
            op,
            tuple,
            at: now,
        });
    }

    /// A remote request that waits, let through by the hooks, and nothing matches: pending.
    pub(super) fn add_wait(
        &mut self,
        now: Time,
        key: PendingKey,
        op: RequestOp,
        template: Template,
        expires: Time,
    ) {
        if expires <= now {
            return;
        }
        if self.waits.iter().any(|w| w.key == key) {
            self.stats.waits_repeated += 1;
            return;
        }
        self.expire_waits(now);
        if self.waits.len() >= self.config.max_waits {
            // Of the P + 1, the one that would expire first goes — possibly the new one.
            self.stats.waits_dropped += 1;
            let first = self
                .waits
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.expires)
                .map(|(i, w)| (i, w.expires));
            match first {
                Some((i, at)) if at < expires => {
                    self.waits.remove(i);
                }
                _ => return,
            }
        }
        self.stats.waits_accepted += 1;
        self.waits.push(Wait {
            key,
            op,
            template,
            expires,
            answer_at: None,
            held: None,
        });
    }

    /// Whether a request with this key is pending (a repeat adds nothing, spec §11).
    pub(super) fn is_waiting(&self, key: &PendingKey) -> bool {
        self.waits.iter().any(|w| w.key == *key)
    }

    /// Sends the answers of waits whose back-off has ended, looking at the space again.
    pub(super) fn answer_waits(&mut self, now: Time) {
        while let Some(i) = self
            .waits
            .iter()
            .position(|w| w.answer_at.is_some_and(|at| at <= now))
        {
            let w = &self.waits[i];
            let key = w.key;
            let found = match w.op {
                RequestOp::Rd | RequestOp::Test => self.space.rd(now, &w.template),
                RequestOp::Inp => {
                    let template = w.template.clone();
                    match w.held.and_then(|h| self.space.take(now, h)) {
                        Some(t) => Some(t),
                        None => self.space.inp(now, &template),
                    }
                }
            };
            let Some(tuple) = found else {
                // Nothing matches any more: stay pending until the wait ends.
                let w = &mut self.waits[i];
                w.answer_at = None;
                w.held = None;
                continue;
            };
            let msg = Message::Tuple { tuple, reply: true };
            if self.send(&msg).is_ok() {
                self.stats.replies_sent += 1;
            }
            let Message::Tuple { tuple, .. } = msg else {
                unreachable!()
            };
            // The reply answers every pending request it matches, this one included.
            self.finish_waits(&tuple);
            // It matched this wait, so the wait is gone; never loop on it regardless.
            if let Some(w) = self.waits.iter_mut().find(|w| w.key == key) {
                w.answer_at = None;
                w.held = None;
            }
        }
    }

    /// A TUPLE with R = 1 was sent or heard: every pending request it matches is done (spec
    /// §11); an INP among them releases its held tuple.
    pub(super) fn finish_waits(&mut self, tuple: &Tuple) {
        if self.waits.is_empty() {
            return;
        }
        let before = self.waits.len();
        self.waits.retain(|w| !w.template.matches(tuple));
        self.stats.waits_finished += (before - self.waits.len()) as u64;
    }

    /// Drops the waits that have ended, without counting them as dropped.
    pub(super) fn expire_waits(&mut self, now: Time) {
        let before = self.waits.len();
        self.waits.retain(|w| w.expires > now);
        self.stats.waits_expired += (before - self.waits.len()) as u64;
    }

    /// The next time a wait needs the node: an answer due or an expiry.
    pub(super) fn next_wait_timeout(&self) -> Option<Time> {
        self.waits
            .iter()
            .map(|w| w.answer_at.map_or(w.expires, |a| a.min(w.expires)))
            .min()
    }

    /// Remote requests waiting in this space now (spec §11).
    pub fn waiting_requests(&self) -> usize {
        self.waits.len()
    }
}

/// The wait a requester sends for `timeout` (spec §11): ⌊timeout⌋ in whole seconds, at most
/// 65535; `None` under one second.
pub fn wait_secs(timeout: Duration) -> Option<NonZeroU16> {
    NonZeroU16::new(u16::try_from(timeout.as_secs()).unwrap_or(u16::MAX))
}
