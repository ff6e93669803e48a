//! Drivers for the session's unit tests: a session on a leaked configuration, and input
//! fed whole or cut into pieces as reads would bring it.

use super::{Event, SinkSession};
use crate::sink::config::{Delays, SinkConfig};
use crate::sink::fault::FaultPlan;

/// A session that has sent its greeting, on a configuration without TLS, AUTH or delays;
/// `save` keeps message content in the events.
pub(super) fn session(save: bool) -> SinkSession<'static> {
    let config = Box::leak(Box::new(SinkConfig::new(
        "sink.test",
        save,
        false,
        None,
        Delays::default(),
    )));
    SinkSession::new(config, 0)
}

/// Feeds `input` in one piece, which must all be used; returns the output and events.
pub(super) fn drive(s: &mut SinkSession, input: &[u8], plan: &FaultPlan) -> (String, Vec<Event>) {
    let used = s.handle_input(input, plan);
    assert_eq!(used, input.len());
    let mut out = Vec::new();
    s.take_output(&mut out);
    let events = std::iter::from_fn(|| s.poll_event()).collect();
    (String::from_utf8(out).unwrap(), events)
}

/// Feeds `input` in pieces of `split` octets, as reads cut anywhere would bring it.
pub(super) fn drive_split(
    s: &mut SinkSession,
    input: &[u8],
    split: usize,
    plan: &FaultPlan,
) -> (String, Vec<Event>) {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    for piece in input.chunks(split) {
        buf.extend_from_slice(piece);
        let used = s.handle_input(&buf, plan);
        buf.drain(..used);
        events.extend(std::iter::from_fn(|| s.poll_event()));
    }
    let mut out = Vec::new();
    s.take_output(&mut out);
    (String::from_utf8(out).unwrap(), events)
}
