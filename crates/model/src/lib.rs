//! Junction's event model: Segment Spec messages as they arrive through the Tracking API,
//! the Webhooks destination or a Destination Function.
//!
//! Everything here is pure: bytes and values in, typed messages or precise refusals out. No
//! sockets, no clock (the caller passes the arrival time), no store. The server decides what to
//! do with a refusal (a 400 for a single message, the rejected-message log inside a batch).

pub mod exact;
pub mod intercom;
pub mod limits;
pub mod message;
pub mod parse;
pub mod timestamp;

pub use message::{Message, MessageType};
pub use parse::{
    Envelope, MessageError, RejectedMessage, RequestError, first_array_element, parse_batch,
    parse_single, parse_webhook,
};
