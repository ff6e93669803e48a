//! What became of each recipient: settling an attempt's replies into outcomes, the bounces
//! (RFC 3464 DSNs) that failures produce, and the delivery log.

pub mod dsn;
pub mod log;
pub mod settle;
