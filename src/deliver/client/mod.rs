//! The SMTP client used for delivery: the sans-io [`machine::Client`], with what it reads
//! from the server's EHLO reply ([`extensions`]), what each reply answers and how long to
//! wait for it ([`waits`]), what a message asks of the server ([`envelope`]) and each
//! transaction's bookkeeping; and the glommio [`driver`] that connects it to a socket and
//! feeds it content from the spool.

pub mod driver;
pub mod envelope;
pub mod extensions;
pub mod machine;
pub mod tls;
mod transaction;
pub mod waits;
