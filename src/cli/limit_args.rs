//! `serve`'s limit flags: one per limit of [`crate::limits::Limits`], each with
//! its environment variable. A request past one is refused with a problem that
//! names the flag; `serve` refuses to start with limits whose largest event
//! would not fit in one stored event.

use clap::Args;

use crate::limits::Limits;

/// Limits on what clients send and what one organization keeps.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Endpoints one organization may register, disabled ones included; one more is 409.
    #[arg(long, env = "HOOKLEDGER_MAX_ENDPOINTS_PER_ORG", default_value_t = Limits::default().endpoints_per_organization, value_parser = at_least_one)]
    pub max_endpoints_per_org: usize,

    /// Items in one endpoint's `eventTypes`; more is 400.
    #[arg(long, env = "HOOKLEDGER_MAX_EVENT_TYPES_PER_ENDPOINT", default_value_t = Limits::default().event_types_per_endpoint, value_parser = at_least_one)]
    pub max_event_types_per_endpoint: usize,

    /// Deliveries one event may fan out to: the enabled endpoints subscribed to
    /// one event type. Creating, enabling or widening an endpoint past it is
    /// 409; accepting an event never is.
    #[arg(long, env = "HOOKLEDGER_MAX_FAN_OUT", default_value_t = Limits::default().fan_out, value_parser = at_least_one)]
    pub max_fan_out: usize,

    /// Characters in an endpoint's `name`.
    #[arg(long, env = "HOOKLEDGER_MAX_NAME_LENGTH", default_value_t = Limits::default().name_length, value_parser = at_least_one)]
    pub max_name_length: usize,

    /// Characters in an endpoint's `url`.
    #[arg(long, env = "HOOKLEDGER_MAX_URL_LENGTH", default_value_t = Limits::default().url_length, value_parser = at_least_one)]
    pub max_url_length: usize,

    /// Characters in an event type (an event's `eventType`, each of an endpoint's `eventTypes`).
    #[arg(long, env = "HOOKLEDGER_MAX_EVENT_TYPE_LENGTH", default_value_t = Limits::default().event_type_length, value_parser = at_least_one)]
    pub max_event_type_length: usize,

    /// Characters in an event's `sourceKey`.
    #[arg(long, env = "HOOKLEDGER_MAX_SOURCE_KEY_LENGTH", default_value_t = Limits::default().source_key_length, value_parser = at_least_one)]
    pub max_source_key_length: usize,

    /// Characters in an attempt's `lastError`. Every delivery of an event shows
    /// its last one in each record-attempt answer, so this and the fan-out
    /// bound that answer's size.
    #[arg(long, env = "HOOKLEDGER_MAX_LAST_ERROR_LENGTH", default_value_t = Limits::default().last_error_length, value_parser = at_least_one)]
    pub max_last_error_length: usize,

    /// Characters in an `Idempotency-Key` header.
    #[arg(long, env = "HOOKLEDGER_MAX_IDEMPOTENCY_KEY_LENGTH", default_value_t = Limits::default().idempotency_key_length, value_parser = at_least_one)]
    pub max_idempotency_key_length: usize,

    /// Bytes after which a list page takes no more items (a page always has
    /// one item if any is left; `nextCursor` continues).
    #[arg(long, env = "HOOKLEDGER_MAX_PAGE_BYTES", default_value_t = Limits::default().page_bytes, value_parser = at_least_one)]
    pub max_page_bytes: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            endpoints_per_organization: self.max_endpoints_per_org,
            event_types_per_endpoint: self.max_event_types_per_endpoint,
            fan_out: self.max_fan_out,
            name_length: self.max_name_length,
            url_length: self.max_url_length,
            event_type_length: self.max_event_type_length,
            source_key_length: self.max_source_key_length,
            last_error_length: self.max_last_error_length,
            idempotency_key_length: self.max_idempotency_key_length,
            page_bytes: self.max_page_bytes,
        }
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number from 1 up".into()),
    }
}
