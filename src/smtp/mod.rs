//! The SMTP grammar shared by the server, the spool and the delivery client: commands,
//! replies, addresses, the DATA/BDAT wire codec, the envelope of an accepted message.
//! Pure code: no sockets, no clock.

pub mod address;
pub mod command;
pub mod data;
pub mod dsn;
pub mod envelope;
pub mod reply;
pub mod response;

pub use reply::{Enhanced, Reply};
