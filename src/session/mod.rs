//! The server side of SMTP: a sans-io [`state::Session`], its content scanners, and the
//! glommio driver that connects it to a socket.

pub mod auth;
pub mod data;
pub mod driver;
pub mod envelope;
pub mod state;
