//! Given / when / then: `given([events]).when(command).then([events])`, and the
//! read model that the given events plus the decided ones fold into.

use crate::decide::{Command, Rejection, decide};
use crate::event::{Event, Metadata, Recorded};
use crate::model::ReadModel;
use crate::values::Timestamp;

/// Events start at this instant and are one second apart.
pub const T0: i64 = 1_700_000_000_000_000;

pub fn at(n: u64) -> Timestamp {
    Timestamp::from_micros(T0 + n as i64 * 1_000_000)
}

#[derive(Debug, Default)]
pub struct Scenario {
    pub model: ReadModel,
    next_id: u64,
}

pub fn given(events: impl IntoIterator<Item = Event>) -> Scenario {
    let mut scenario = Scenario::default();
    for event in events {
        scenario.fold(event, Metadata::default());
    }
    scenario
}

impl Scenario {
    /// Folds one event at the next position, one second after the previous one.
    pub fn fold(&mut self, event: Event, metadata: Metadata) -> &mut Self {
        let position = self.model.position + 1;
        self.model.apply(&Recorded {
            position,
            // Folds take versions from their own state, not from here.
            version: 0,
            recorded_at: at(position),
            metadata,
            event,
        });
        self
    }

    pub fn when(mut self, command: Command) -> Outcome {
        let mut next_id = self.next_id;
        let result = decide(&self.model, command, &mut || {
            next_id += 1;
            format!("dlv_{next_id:04}")
        });
        self.next_id = next_id;
        if let Ok(events) = &result {
            for event in events.clone() {
                self.fold(event, Metadata::default());
            }
        }
        Outcome {
            scenario: self,
            result,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub result: Result<Vec<Event>, Rejection>,
}

impl Outcome {
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = Event>) -> ReadModel {
        let expected: Vec<Event> = expected.into_iter().collect();
        assert_eq!(self.result, Ok(expected));
        self.scenario.model
    }

    #[track_caller]
    pub fn then_err(self, expected: Rejection) -> ReadModel {
        assert_eq!(self.result, Err(expected));
        self.scenario.model
    }
}
