//! The turns of fair admission: how many requests of each class run and wait,
//! whose turn is next, and each class's use of handler time. It knows nothing
//! of HTTP but the 429 it refuses with; [`super::admit`] is the middleware.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Class, FairLimits, MAX_IDLE_CLASSES, USE_HALF_LIFE};
use crate::api::error::ApiError;

/// The admission of one server.
#[derive(Debug)]
pub struct Admission {
    limits: FairLimits,
    max_wait: Duration,
    state: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    in_flight: usize,
    classes: HashMap<Class, Tenant>,
    /// The classes with a request waiting, in no order.
    waiting: Vec<Class>,
    next_waiter: u64,
    /// Admissions so far, to break ties between classes of equal use.
    admitted: u64,
}

#[derive(Debug)]
struct Tenant {
    in_flight: usize,
    queue: VecDeque<Waiter>,
    /// Handler time used, in microseconds, as of `used_at`.
    used: f64,
    used_at: Instant,
    /// The admission count when this class was last admitted.
    last_admitted: u64,
}

impl Tenant {
    fn new(now: Instant) -> Tenant {
        Tenant {
            in_flight: 0,
            queue: VecDeque::new(),
            used: 0.0,
            used_at: now,
            last_admitted: 0,
        }
    }

    fn use_at(&self, now: Instant) -> f64 {
        let halvings =
            now.saturating_duration_since(self.used_at).as_secs_f64() / USE_HALF_LIFE.as_secs_f64();
        self.used * (-halvings).exp2()
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.queue.is_empty()
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    turn: oneshot::Sender<Permit>,
}

impl Admission {
    /// Admission within `limits`, where a request waits at most `max_wait`.
    pub fn new(limits: FairLimits, max_wait: Duration) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            max_wait,
            state: Mutex::new(Queues::default()),
        })
    }

    pub fn limits(&self) -> FairLimits {
        self.limits
    }

    /// Requests waiting for their turn now, of every class.
    pub fn queued(&self) -> usize {
        self.counts().1
    }

    /// Requests running and waiting now, of every class.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        let waiting = state
            .waiting
            .iter()
            .map(|c| state.classes[c].queue.len())
            .sum();
        (state.in_flight, waiting)
    }

    /// A place for a request of `class`: at once if there is room, else when
    /// its turn comes; 429 if its class has too many waiting or its turn
    /// does not come within its longest wait.
    pub async fn acquire(self: &Arc<Self>, class: Class) -> Result<Permit, ApiError> {
        let (id, turn) = {
            let mut state = self.lock();
            let now = Instant::now();
            if !state.classes.contains_key(&class) {
                if state.classes.len() >= MAX_IDLE_CLASSES {
                    state.classes.retain(|_, tenant| !tenant.is_idle());
                }
                state.classes.insert(class.clone(), Tenant::new(now));
            }
            let limits = self.limits;
            let room = state.in_flight < limits.in_flight.max(1);
            let tenant = state.classes.get_mut(&class).expect("inserted above");
            if room
                && tenant.in_flight < limits.in_flight_per_class.max(1)
                && tenant.queue.is_empty()
            {
                tenant.in_flight += 1;
                state.in_flight += 1;
                state.admitted += 1;
                let admitted = state.admitted;
                if let Some(tenant) = state.classes.get_mut(&class) {
                    tenant.last_admitted = admitted;
                }
                return Ok(self.permit(class));
            }
            if tenant.queue.len() >= limits.queued_per_class {
                return Err(too_many(&class, "has as many requests waiting as it may"));
            }
            let (sender, turn) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            let tenant = state.classes.get_mut(&class).expect("inserted above");
            tenant.queue.push_back(Waiter { id, turn: sender });
            if tenant.queue.len() == 1 {
                state.waiting.push(class.clone());
            }
            (id, turn)
        };
        let mut leave = Leave {
            admission: self,
            class: &class,
            id: Some(id),
        };
        match tokio::time::timeout(self.max_wait, turn).await {
            Ok(Ok(permit)) => {
                leave.id = None;
                Ok(permit)
            }
            Ok(Err(_)) => Err(ApiError::Internal(
                "a queued request's turn was dropped".into(),
            )),
            Err(_) => Err(too_many(&class, "waited its longest for a turn")),
        }
    }

    fn permit(self: &Arc<Self>, class: Class) -> Permit {
        Permit {
            admission: Some(self.clone()),
            class,
        }
    }

    /// Gives the place of a finished request of `class`, which used `busy`, to
    /// whoever's turn it is.
    fn release(self: &Arc<Self>, class: &Class, busy: Duration) {
        let mut state = self.lock();
        let now = Instant::now();
        state.in_flight = state.in_flight.saturating_sub(1);
        if let Some(tenant) = state.classes.get_mut(class) {
            tenant.in_flight = tenant.in_flight.saturating_sub(1);
            // At least a microsecond: every request costs something.
            tenant.used = tenant.use_at(now) + busy.as_secs_f64().mul_add(1e6, 1.0);
            tenant.used_at = now;
        }
        self.hand_over(&mut state, now);
    }

    /// Admits waiting requests while there is room, each time the first of
    /// the class with the least use that may run one more.
    fn hand_over(self: &Arc<Self>, state: &mut Queues, now: Instant) {
        let limits = self.limits;
        while state.in_flight < limits.in_flight.max(1) {
            let Some(index) = next_class(state, limits.in_flight_per_class.max(1), now) else {
                return;
            };
            let class = state.waiting[index].clone();
            state.admitted += 1;
            let admitted = state.admitted;
            let tenant = state.classes.get_mut(&class).expect("a waiting class");
            let Some(waiter) = tenant.queue.pop_front() else {
                state.waiting.swap_remove(index);
                continue;
            };
            if tenant.queue.is_empty() {
                state.waiting.swap_remove(index);
            }
            tenant.in_flight += 1;
            tenant.last_admitted = admitted;
            state.in_flight += 1;
            if let Err(mut unwanted) = waiter.turn.send(self.permit(class.clone())) {
                // Its request is gone (the client left): the place is free again.
                unwanted.admission = None;
                state.in_flight -= 1;
                if let Some(tenant) = state.classes.get_mut(&class) {
                    tenant.in_flight -= 1;
                }
            }
        }
    }

    /// Takes a request that stopped waiting out of its class's queue.
    fn leave(&self, class: &Class, id: u64) {
        let mut state = self.lock();
        let Some(tenant) = state.classes.get_mut(class) else {
            return;
        };
        tenant.queue.retain(|w| w.id != id);
        if tenant.queue.is_empty() {
            state.waiting.retain(|c| c != class);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The index in `waiting` of the class whose turn it is: of those below
/// `per_class` running, the least use, then the longest since its last turn.
fn next_class(state: &Queues, per_class: usize, now: Instant) -> Option<usize> {
    state
        .waiting
        .iter()
        .enumerate()
        .map(|(i, class)| (i, &state.classes[class]))
        .filter(|(_, tenant)| tenant.in_flight < per_class)
        .min_by(|(_, a), (_, b)| {
            a.use_at(now)
                .total_cmp(&b.use_at(now))
                .then(a.last_admitted.cmp(&b.last_admitted))
        })
        .map(|(i, _)| i)
}

fn too_many(class: &Class, what: &str) -> ApiError {
    let who = match class {
        Class::Organization(_) => "this organization",
        Class::Unauthenticated => "the requests without a known API key",
    };
    ApiError::TooManyRequests {
        what: format!("the server is busy, and {who} {what}"),
        retry_after: 1,
    }
}

/// A request's place among those running; dropping it gives the place up.
#[derive(Debug)]
pub struct Permit {
    /// `None` once given back.
    admission: Option<Arc<Admission>>,
    class: Class,
}

impl Permit {
    /// Gives the place up, charging the class `busy` of handler time.
    pub fn finish(mut self, busy: Duration) {
        if let Some(admission) = self.admission.take() {
            admission.release(&self.class, busy);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.release(&self.class, Duration::ZERO);
        }
    }
}

/// Takes a waiting request out of its queue if it stops waiting (its client
/// left, or it waited too long) before its turn.
struct Leave<'a> {
    admission: &'a Arc<Admission>,
    class: &'a Class,
    id: Option<u64>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.admission.leave(self.class, id);
        }
    }
}

#[cfg(test)]
#[path = "turns_tests.rs"]
mod tests;
