//! Backend health as the storage actors report it to the router, and the circuit breaker
//! both storage actors use to fail fast while their backend is down.

use std::time::{Duration, Instant};

use actix::prelude::*;

/// The two storage backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Redis,
    Mysql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Mysql => "mysql",
        }
    }
}

/// What a storage actor knows about its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendState {
    pub up: bool,
    /// Round trip of the last successful probe.
    pub latency: Option<Duration>,
    /// The last failure, without secrets (for logs and `diagnose`).
    pub last_error: Option<String>,
}

impl BackendState {
    pub fn down(error: impl Into<String>) -> Self {
        BackendState {
            up: false,
            latency: None,
            last_error: Some(error.into()),
        }
    }
}

/// Sent by a storage actor to its subscribers whenever up/down or the probe latency changes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BackendStateChanged {
    pub backend: Backend,
    pub state: BackendState,
}

/// Asks a storage actor to send its state changes to `subscriber` (and the current state now).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub subscriber: Recipient<BackendStateChanged>,
}

/// Consecutive failed calls that mark a backend down before the next probe does.
const FAILURES_TO_OPEN: u32 = 2;

/// A probe's error when the backend did not answer its ping in time.
pub const PING_TIMED_OUT: &str = "ping timed out";

/// Fails calls fast while the backend is down; the background probe closes it again.
#[derive(Debug)]
pub struct Circuit {
    consecutive_failures: u32,
    open: bool,
    last_change: Instant,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            consecutive_failures: 0,
            // Closed circuits are only granted by a successful probe or call.
            open: true,
            last_change: Instant::now(),
        }
    }
}

impl Circuit {
    /// True when calls may go to the backend.
    pub fn allows(&self) -> bool {
        !self.open
    }

    /// Records a successful call or probe; returns true when this closed the circuit.
    pub fn success(&mut self) -> bool {
        self.consecutive_failures = 0;
        if self.open {
            self.open = false;
            self.last_change = Instant::now();
            return true;
        }
        false
    }

    /// Records a failed call; returns true when this opened the circuit.
    pub fn failure(&mut self) -> bool {
        self.consecutive_failures += 1;
        if !self.open && self.consecutive_failures >= FAILURES_TO_OPEN {
            self.open = true;
            self.last_change = Instant::now();
            return true;
        }
        false
    }

    /// Opens at once (a failed probe is conclusive); returns true when it was closed.
    /// Records a failed probe; returns true when the circuit is open afterwards. One slow
    /// ping (a busy server, a stall of a few hundred milliseconds) is not an outage: a
    /// time-out counts like a failed call, two in a row open the circuit. Any other error
    /// (refused, reset) opens it at once.
    pub fn probe_failed(&mut self, error: &str) -> bool {
        if error == PING_TIMED_OUT {
            self.failure();
        } else {
            self.trip();
        }
        self.open
    }

    pub fn trip(&mut self) -> bool {
        self.consecutive_failures = FAILURES_TO_OPEN;
        if !self.open {
            self.open = true;
            self.last_change = Instant::now();
            return true;
        }
        false
    }
}

/// The subscribers of one storage actor and the last state sent to them.
#[derive(Default)]
pub struct StateReporter {
    subscribers: Vec<Recipient<BackendStateChanged>>,
    last: Option<BackendState>,
}

impl StateReporter {
    pub fn subscribe(&mut self, backend: Backend, subscriber: Recipient<BackendStateChanged>) {
        if let Some(state) = &self.last {
            subscriber.do_send(BackendStateChanged {
                backend,
                state: state.clone(),
            });
        }
        self.subscribers.push(subscriber);
    }

    /// Sends `state` to every subscriber when it differs from the last one sent; latency changes
    /// are sent too so /health shows a fresh number.
    pub fn report(&mut self, backend: Backend, state: BackendState) {
        if self.last.as_ref() == Some(&state) {
            return;
        }
        let was_up = self.last.as_ref().map(|s| s.up);
        if was_up != Some(state.up) {
            if state.up {
                log::info!("{} is up", backend.name());
            } else {
                log::warn!(
                    "{} is down: {}",
                    backend.name(),
                    state.last_error.as_deref().unwrap_or("unknown error")
                );
            }
        }
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(BackendStateChanged {
                backend,
                state: state.clone(),
            });
        }
        self.last = Some(state);
    }

    pub fn current(&self) -> Option<&BackendState> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> Circuit {
        let mut circuit = Circuit::default();
        assert!(circuit.success(), "a success closes a new circuit");
        circuit
    }

    #[test]
    fn one_timed_out_probe_keeps_the_circuit_closed_and_two_open_it() {
        let mut circuit = closed();
        assert!(!circuit.probe_failed(PING_TIMED_OUT));
        assert!(circuit.allows());
        assert!(circuit.probe_failed(PING_TIMED_OUT));
        assert!(!circuit.allows());
    }

    #[test]
    fn a_success_between_timed_out_probes_starts_the_count_again() {
        let mut circuit = closed();
        assert!(!circuit.probe_failed(PING_TIMED_OUT));
        assert!(!circuit.success(), "already closed");
        assert!(!circuit.probe_failed(PING_TIMED_OUT));
        assert!(circuit.allows());
    }

    #[test]
    fn a_probe_error_opens_the_circuit_at_once() {
        let mut circuit = closed();
        assert!(circuit.probe_failed("Connection refused (os error 111)"));
        assert!(!circuit.allows());
    }
}
