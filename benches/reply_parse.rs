//! Reply parsing on the delivery client's hot path: the multi-line EHLO reply read once per
//! connection, and the batch of replies a pipelined transaction gets in one read (RFC 2920).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pigeon::smtp::response::parse_reply;

/// A large provider's EHLO reply.
const EHLO: &[u8] = b"250-mx.google.example at your service, [192.0.2.7]\r\n\
    250-SIZE 157286400\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n\
    250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n";

/// Parses every reply in `buf`; returns how many there were.
fn parse_all(mut buf: &[u8]) -> usize {
    let mut n = 0;
    while let Ok(Some((reply, used))) = parse_reply(buf) {
        black_box(reply);
        buf = &buf[used..];
        n += 1;
    }
    n
}

/// MAIL, `rcpts` RCPTs (every tenth refused with a two-line reply) and DATA, as one read.
fn pipelined_batch(rcpts: usize) -> Vec<u8> {
    let mut buf = b"250 2.1.0 Sender ok\r\n".to_vec();
    for i in 0..rcpts {
        if i % 10 == 9 {
            buf.extend_from_slice(
                b"550-5.1.1 The email account that you tried to reach does not exist.\r\n\
                  550 5.1.1 Please double-check the recipient's address.\r\n",
            );
        } else {
            buf.extend_from_slice(b"250 2.1.5 Recipient ok\r\n");
        }
    }
    buf.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
    buf
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply_parse");

    group.throughput(Throughput::Bytes(EHLO.len() as u64));
    group.bench_function("ehlo", |b| b.iter(|| parse_all(black_box(EHLO))));

    for rcpts in [1, 100] {
        let batch = pipelined_batch(rcpts);
        assert_eq!(parse_all(&batch), rcpts + 2);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(format!("pipelined_batch_{rcpts}_rcpts"), |b| {
            b.iter(|| parse_all(black_box(&batch)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
