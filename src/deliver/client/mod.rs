//! The SMTP client used for delivery: the sans-io [`state::Client`] and the glommio
//! [`driver`] that connects it to a socket and feeds it content from the spool.

pub mod driver;
pub mod state;
pub mod tls;
