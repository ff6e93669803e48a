//! Choosing the DKIM signers for a message and making its `DKIM-Signature:` fields, with
//! the body hashes the session computed while the content streamed in.

use crate::dkim::{self, signers::Signers};
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::{replies, Reply};

/// The `DKIM-Signature:` fields for a message, once, whatever its recipient count: one per
/// key of the closest configured domain at or above the From domain, unless the message
/// already carries a signature by that domain and selector. Returns the fields and a
/// summary for the log (`d=… s=… a=…; …`). The caller decides whether the client is one
/// whose mail is ours to sign.
pub fn dkim_sign(
    signers: &Signers,
    envelope: &Envelope,
    content: &[u8],
    now_unix: u64,
) -> Result<(Vec<u8>, String), Reply> {
    if signers.is_empty() {
        return Ok((Vec::new(), String::new()));
    }
    // The header section, up to but not including the empty line.
    let headers = if content.starts_with(b"\r\n") {
        &content[..0]
    } else {
        let end = memchr::memmem::find(content, b"\r\n\r\n").map_or(content.len(), |i| i + 2);
        &content[..end]
    };
    let Some(domain) = dkim::from_domain(headers) else {
        return Ok((Vec::new(), String::new()));
    };
    let mut fields = Vec::new();
    let mut summary = Vec::new();
    for signer in signers.for_domain(&domain) {
        if dkim::already_signed(headers, &signer.domain, &signer.selector) {
            continue;
        }
        let Some((_, hash)) = envelope
            .body_hashes
            .iter()
            .find(|(c, _)| *c == signer.body_canon)
        else {
            continue;
        };
        let field = signer.sign(headers, hash, now_unix).map_err(|e| {
            tracing::error!(d = %signer.domain, s = %signer.selector, error = %e, "DKIM signing failed");
            // 451 4.3.0: sent unsigned it would be junked or refused by the large
            // providers, and the fault is ours and probably passing, so the client is
            // asked to try again.
            replies::local_error()
        })?;
        fields.extend(field);
        summary.push(format!(
            "d={} s={} a={}",
            signer.domain,
            signer.selector,
            signer.key.algorithm().name()
        ));
    }
    Ok((fields, summary.join("; ")))
}
