//! Making text safe to write into the report: network text cleaned of control characters
//! (so it cannot add header fields or MIME parts) and capped, and logical lines folded so
//! that none exceeds 998 octets (RFC 5322 §2.1.1).

/// Lines are folded before this column where they can be (RFC 5322 §2.1.1: SHOULD be no
/// more than 78 characters).
pub(super) const WRAP: usize = 78;
/// A single token longer than this is cut into pieces so that no line can reach the hard
/// limit of 998 octets (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6): the longest lead is a field
/// name (under 30) or the 4-space continuation indent.
pub(super) const MAX_WORD: usize = 500;
/// Cap on one unfolded value (an address, a host name, an id); with its field name it
/// stays under 998 octets.
pub(super) const MAX_FIELD: usize = 900;
/// Cap on a diagnostic: a hostile server's reply cannot make our report large.
pub(super) const MAX_DIAGNOSTIC: usize = 4096;

/// Which characters network text may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Charset {
    /// Printable ASCII and space only.
    Ascii,
    /// Also non-ASCII characters that are not controls or line separators.
    Utf8,
}

/// `text` made safe to write into a header field or a line of the report: at most `max`
/// characters; each control character (CR and LF above all), DEL, and Unicode line or
/// paragraph separator (which some parsers treat as line ends) replaced by `control`; and,
/// with [`Charset::Ascii`], each non-ASCII character replaced by `?`.
pub(super) fn clean(text: &str, charset: Charset, control: char, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c,
            _ if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => control,
            _ if charset == Charset::Ascii => '?',
            _ => c,
        })
        .collect()
}

/// Appends `lead` and the words of `text` as one logical line, folded before column
/// [`WRAP`] with a 4-space indent, and its CRLF.
///
/// With a field name as `lead` (`"Diagnostic-Code:"`) this is RFC 5322 §2.2.3 folding: the
/// unfolded value is the words joined by single spaces. A word over [`MAX_WORD`] octets is
/// cut into pieces (a space then appears between them when unfolded), which keeps every
/// line under 998 octets. Splitting on whitespace also drops any CR or LF that reached here.
pub(super) fn fold(out: &mut String, lead: &str, text: &str) {
    out.push_str(lead);
    let mut col = lead.len();
    let mut started = false;
    for word in text.split_whitespace() {
        let mut rest = word;
        while !rest.is_empty() {
            let piece = prefix(rest, MAX_WORD);
            rest = &rest[piece.len()..];
            let space = started || !lead.is_empty();
            if started && col + 1 + piece.len() > WRAP {
                out.push_str("\r\n    ");
                col = 4;
            } else if space {
                out.push(' ');
                col += 1;
            }
            out.push_str(piece);
            col += piece.len();
            started = true;
        }
    }
    out.push_str("\r\n");
}

/// The longest prefix of `s` of at most `max` octets that ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_keeps_words_and_indents_continuations() {
        let mut s = String::new();
        fold(&mut s, "Diagnostic-Code:", &"abcdefghij ".repeat(20));
        for (i, line) in s.trim_end().split("\r\n").enumerate() {
            assert!(line.len() <= WRAP);
            assert_eq!(line.starts_with("    "), i > 0);
        }
        let unfolded = s.replace("\r\n", "");
        let words: Vec<&str> = unfolded.split_whitespace().collect();
        assert_eq!(words[0], "Diagnostic-Code:");
        assert_eq!(words.len(), 21);
        let mut t = String::new();
        fold(&mut t, "", "one two");
        assert_eq!(t, "one two\r\n");
    }

    #[test]
    fn clean_replaces_controls_and_separators() {
        assert_eq!(
            clean("a\r\nb\tc\x7fd", Charset::Ascii, '?', 100),
            "a??b?c?d"
        );
        assert_eq!(clean("a\u{2028}b\u{85}c", Charset::Utf8, ' ', 100), "a b c");
        assert_eq!(clean("żółw", Charset::Ascii, ' ', 100), "???w");
        assert_eq!(clean("żółw", Charset::Utf8, ' ', 100), "żółw");
        assert_eq!(clean("abcdef", Charset::Ascii, '?', 3), "abc");
    }
}
