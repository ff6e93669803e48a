//! The SMTP grammar shared by the server and the delivery client: commands, replies,
//! addresses. Pure code: no sockets, no clock.

pub mod address;
pub mod command;
pub mod dsn;
pub mod reply;
pub mod response;

pub use reply::{Enhanced, Reply};
