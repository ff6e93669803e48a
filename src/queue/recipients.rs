//! The recipient addresses of one queued message, stored compactly.
//!
//! A queue of a million recipients holds a million addresses for days. As `Vec<String>`
//! each costs a 24-octet header plus its own allocation; here all of a message's addresses
//! share one allocation of text and one of `u32` end offsets, so an address costs its
//! octets plus four (see the "Memory per queued recipient" section of
//! `docs/benchmarks.md`).

use std::fmt;
use std::ops::Index;

use crate::runtime::memory::long_lived;

/// A message's recipient addresses, in record order, read by index.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Every address, one after the other.
    text: Box<str>,
    /// Where each address ends in `text`; each starts where the previous one ends.
    ends: Box<[u32]>,
}

impl Recipients {
    /// Address `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        Some(&self.text[start..end])
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no address.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every address, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| &self[i])
    }
}

impl Index<usize> for Recipients {
    type Output = str;

    /// Address `index`; panics past the end, as a slice does.
    fn index(&self, index: usize) -> &str {
        match self.get(index) {
            Some(address) => address,
            None => panic!("recipient {index} of {}", self.len()),
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for Recipients {
    /// Collects addresses. Their total length must fit a `u32`: a message's recipients are
    /// bounded by `limits.max_recipients` times the longest path (RFC 5321 §4.5.3.1.3), far
    /// below 4 GiB. Gathered in growing buffers, then copied at their exact size into the
    /// long-lived heap, where the store stays while the message is queued.
    fn from_iter<I: IntoIterator<Item = S>>(addresses: I) -> Recipients {
        let mut text = String::new();
        let mut ends = Vec::new();
        for address in addresses {
            text.push_str(address.as_ref());
            let end = u32::try_from(text.len()).expect("recipient addresses under 4 GiB");
            ends.push(end);
        }
        long_lived(|| Recipients {
            text: text.as_str().into(),
            ends: ends.as_slice().into(),
        })
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(addresses: &[&str]) {
        let r: Recipients = addresses.iter().collect();
        assert_eq!(r.len(), addresses.len());
        assert_eq!(r.is_empty(), addresses.is_empty());
        assert_eq!(r.iter().collect::<Vec<_>>(), addresses);
        assert_eq!(r.iter().len(), addresses.len());
        for (i, a) in addresses.iter().enumerate() {
            assert_eq!(r.get(i), Some(*a));
            assert_eq!(&r[i], *a);
        }
        assert_eq!(r.get(addresses.len()), None);
    }

    #[test]
    fn any_list_round_trips() {
        round_trip(&[]);
        round_trip(&["a@b.test"]);
        round_trip(&["a@b.test", "c@d.test", "a@b.test"]);
        // Non-ASCII (SMTPUTF8) addresses: offsets are octets, slices stay on characters.
        round_trip(&[
            "jörg@bücher.test",
            "用户@例子.广告",
            "a@b.test",
            "🐦@x.test",
        ]);
        // Empty addresses (`<>` is never a recipient, but the store must not care).
        round_trip(&["", "a@b.test", "", ""]);
    }

    #[test]
    fn one_allocation_of_text_and_one_of_offsets() {
        let many: Vec<String> = (0..1000).map(|i| format!("u{i}@d{}.test", i % 7)).collect();
        let r: Recipients = many.iter().collect();
        assert_eq!(r.text.len(), many.iter().map(String::len).sum::<usize>());
        assert_eq!(r.ends.len(), 1000);
        assert_eq!(&r[999], "u999@d5.test");
        assert_eq!(
            std::mem::size_of::<Recipients>(),
            32,
            "two boxed slices, no capacity fields"
        );
    }

    #[test]
    #[should_panic(expected = "recipient 2 of 2")]
    fn indexing_past_the_end_panics() {
        let r: Recipients = ["a@b.test", "c@d.test"].iter().collect();
        let _ = &r[2];
    }
}
