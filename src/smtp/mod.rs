//! The SMTP grammar shared by the server and (later) the delivery client: commands,
//! replies, addresses. Pure code: no sockets, no clock, no crate-internal dependencies.

pub mod address;
pub mod command;
pub mod reply;

pub use reply::{Enhanced, Reply};
