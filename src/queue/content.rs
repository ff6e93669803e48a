//! Reading a queued message's content from the spool, wherever a copy forward has moved
//! its record meanwhile.

use std::io;

use crate::queue::message::QueuedMessage;
use crate::spool::read::{Content, SegmentReader};

/// The content of `message` for delivery. A copy forward may move it and delete the old
/// segment between reading its location and mapping the file; its location has changed by
/// then (it is updated before the old record is killed), so a failed read is retried
/// once at the new place.
pub fn read_content(reader: &SegmentReader, message: &QueuedMessage) -> io::Result<Content> {
    let (segment, offset) = message.location();
    match reader.content(segment, offset) {
        Err(_) if message.location() != (segment, offset) => {
            let (segment, offset) = message.location();
            reader.content(segment, offset)
        }
        read => read,
    }
}
