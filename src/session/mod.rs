//! The server side of SMTP: a sans-io [`state::Session`] and the glommio driver that
//! connects it to a socket, with the services it is given ([`driver::Services`]): TLS
//! ([`tls`]), password checks, and intake for the messages. The DATA/BDAT codec it uses
//! is [`crate::smtp::data`].

pub mod auth;
pub mod driver;
pub mod state;
pub mod tls;
