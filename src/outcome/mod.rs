//! What became of each recipient: the settler that turns an attempt's replies into
//! outcomes ([`settle`]), the notices to the sender they call for ([`notice`]) and their
//! RFC 3464 form ([`dsn`]), and the delivery log ([`log`]).

pub mod dsn;
pub mod log;
pub mod notice;
pub mod settle;
