//! One whole SMTP transaction through the sans-io server session, as a session driver runs
//! it minus the socket and the spool: a pipelined MAIL/RCPT/DATA batch, 5 KiB (or 100 KiB)
//! of content, the final dot, the stored message answered with its queue id. This is the
//! protocol work a shard does per received message; the criterion figure divided into a
//! core-second is the receive rate that layer alone would allow.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pigeon::session::state::{Event, Session, SessionConfig};

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.bench.test".into(),
        max_message_size: 50 << 20,
        max_recipients: 1000,
        max_errors: 20,
        max_messages_per_session: u32::MAX,
        max_recipients_per_session: u32::MAX,
        relay_domains: Vec::new(),
        body_canons: Vec::new(),
    })
}

/// MAIL, `rcpts` RCPTs and DATA in one write, then the content and the dot.
fn transaction(size: usize, rcpts: usize) -> (Vec<u8>, Vec<u8>) {
    let mut commands = b"MAIL FROM:<list@bench.test> SIZE=5200\r\n".to_vec();
    for i in 0..rcpts {
        commands.extend_from_slice(format!("RCPT TO:<u{i}@d{}.test>\r\n", i % 100).as_bytes());
    }
    commands.extend_from_slice(b"DATA\r\n");
    let mut content = b"From: list@bench.test\r\nTo: u0@d0.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line =
        b"The quick brown fox jumps over the lazy dog, and then over the lazy dog again.\r\n";
    while content.len() < size {
        content.extend_from_slice(line);
    }
    content.extend_from_slice(b".\r\n");
    (commands, content)
}

/// Runs one transaction on `session`, as the driver would: feed, answer the stored message.
fn run(session: &mut Session, commands: &[u8], content: &[u8], out: &mut Vec<u8>) {
    for input in [commands, content] {
        let used = session.handle_input(input);
        debug_assert_eq!(used, input.len());
        while let Some(event) = session.poll_event() {
            if let Event::Message(envelope, body) = event {
                black_box((envelope, body));
                session.handle_stored(Ok("0123456789ABCDEF"));
            }
        }
        session.take_output(out);
        black_box(&out);
        out.clear();
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_transaction");
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    for (size, rcpts) in [(5 << 10, 1), (5 << 10, 100), (100 << 10, 1)] {
        let (commands, content) = transaction(size, rcpts);
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new(format!("{}KiB", size >> 10), format!("{rcpts}rcpt")),
            |b| {
                let mut session = Session::new(config(), peer, true);
                let mut out = Vec::with_capacity(4096);
                run(&mut session, b"EHLO client.bench.test\r\n", b"", &mut out);
                b.iter(|| run(&mut session, &commands, &content, &mut out));
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
