//! One delivery connection: take jobs for a domain from its ready queue, connect to the
//! first host that answers, run one transaction per job on the same connection (up to
//! `max_messages_per_connection`), and settle each job's results.
//!
//! Under `tls = "opportunistic"` a failed TLS handshake is followed by one more connection
//! to the same address in plain text, as Postfix does: a server whose TLS is broken still
//! gets its mail, rather than none at all. Under `required` and `verify` it is a deferral.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::clock::now_micros;
use crate::config::DomainPolicy;
use crate::deliver::client::driver::{Connection, TlsUse};
use crate::deliver::client::envelope::Envelope;
use crate::deliver::route::next_hops;
use crate::outcome::settle::{expire, settle};
use crate::queue::message::Job;
use crate::queue::ready::DomainQueue;
use crate::queue::retry::expired;
use crate::runtime::shard::ShardContext;
use crate::smtp::reply::{Enhanced, Reply};
use crate::spool::compact::read_content;

/// Holds one of the domain's connection slots; gives it back however the attempt ends.
struct Slot(Arc<DomainQueue>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.close_connection();
    }
}

/// Runs one connection's worth of deliveries for `queue`. The caller took a connection
/// slot for it.
pub async fn run(ctx: Rc<ShardContext>, queue: Arc<DomainQueue>, policy: Arc<DomainPolicy>) {
    let _slot = Slot(queue.clone());
    ctx.attempts.set(ctx.attempts.get() + 1);
    // At a stop, a connection finishes its transaction and quits; one still busy at the
    // deadline is dropped. Its recipients' outcomes were not spooled, so they are tried
    // again after the restart: at least once, never lost.
    future::or(deliver(&ctx, &queue, &policy), async {
        ctx.stop.wait().await;
        let deadline = ctx.stop_deadline.get().unwrap_or_else(Instant::now);
        glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
    })
    .await;
    ctx.attempts.set(ctx.attempts.get() - 1);
    let mut mine = ctx.domain_connections.borrow_mut();
    if let Some(n) = mine.get_mut(&queue.domain) {
        *n -= 1;
        if *n == 0 {
            mine.remove(&queue.domain);
        }
    }
}

async fn deliver(ctx: &Rc<ShardContext>, queue: &DomainQueue, policy: &DomainPolicy) {
    let Some(job) = take(ctx, queue).await else {
        return;
    };
    let hops = match next_hops(ctx, &queue.domain, policy).await {
        Ok(h) => h,
        Err(reply) => return fail_domain(ctx, queue, job, reply).await,
    };
    let helo = ctx.session.hostname.clone();
    let mut last_error = None;
    let mut conn = None;
    'hosts: for hop in &hops {
        for &addr in &hop.addrs {
            let mut tls = TlsUse {
                policy: policy.tls,
                plain: false,
            };
            loop {
                match Connection::open(addr, &hop.name, &helo, tls, &ctx.tls_out).await {
                    Ok(c) => {
                        conn = Some(c);
                        break 'hosts;
                    }
                    Err(e) if e.retry_plain && !tls.plain => {
                        tracing::info!(host = %hop.name, %addr, reply = %e.reply, "TLS failed, trying again in plain text");
                        tls.plain = true;
                    }
                    Err(e) => {
                        tracing::debug!(host = %hop.name, %addr, reply = %e.reply, "host failed, trying the next");
                        last_error = Some(e.reply);
                        break;
                    }
                }
            }
        }
    }
    let Some(mut conn) = conn else {
        let reply = last_error.unwrap_or_else(|| {
            Reply::new(
                451,
                Enhanced(4, 4, 4),
                format!("no address to deliver to for {}", queue.domain),
            )
        });
        return fail_domain(ctx, queue, job, reply).await;
    };
    let host = conn.host.clone();
    let mut sent = 0;
    let mut jobs = vec![job];
    loop {
        if let Some(limit) = ctx.shared.rate_limit(&queue.domain, policy) {
            let wait = limit.reserve(now_micros());
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
        } else if conn.can_chunk() {
            // Jobs already waiting go out in the same write (a rate-limited domain gets one
            // transaction at a time instead, each after its own wait).
            let max = policy.max_messages_per_connection;
            let mut octets = jobs[0].message.size;
            while jobs.len() < PIPELINE_DEPTH
                && sent + (jobs.len() as u32) < max
                && octets < PIPELINE_OCTETS
                && !ctx.stop.is_stopping()
            {
                let Some(more) = take(ctx, queue).await else {
                    break;
                };
                octets += more.message.size;
                jobs.push(more);
            }
        }
        let mut ready = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            match read_content(&ctx.reader, &job.message) {
                Ok(content) => ready.push((job, content)),
                Err(e) => {
                    tracing::error!(id = %job.message.id, error = %e, "cannot read spooled content");
                    let reply = Reply::new(451, Enhanced(4, 3, 0), "local error reading the spool");
                    fail(ctx, job, Some(&host), conn.tls, reply).await;
                }
            }
        }
        let outcomes = if conn.can_chunk() {
            let messages = ready
                .iter()
                .map(|(job, content)| (envelope(job), content.bytes()))
                .collect();
            conn.send_many(messages).await
        } else if let Some((job, content)) = ready.first() {
            vec![conn.send(envelope(job), content.bytes()).await]
        } else {
            Vec::new()
        };
        let mut broken = false;
        for ((job, _), outcome) in ready.into_iter().zip(outcomes) {
            sent += 1;
            match outcome {
                Ok(results) => {
                    let results = results
                        .into_iter()
                        .map(|(i, r)| (job.recipients[i], r))
                        .collect();
                    // The next transaction on this connection does not wait for these
                    // outcomes to be durable (a sync): they are settled by a task of their own.
                    let dsn = conn.offers_dsn();
                    settle_apart(ctx, job, Some(host.clone()), conn.tls, dsn, results);
                }
                Err((reply, pending)) => {
                    // The transaction did not finish: every recipient in it gets the failure
                    // (a 4xx when the connection broke), even one already refused at RCPT,
                    // which is then tried again rather than bounced on a half-done session.
                    broken = true;
                    let pending = if pending.is_empty() {
                        (0..job.recipients.len()).collect()
                    } else {
                        pending
                    };
                    let results = pending
                        .into_iter()
                        .map(|i| (job.recipients[i], reply.clone()))
                        .collect();
                    let dsn = conn.offers_dsn();
                    settle(ctx, job, Some(&host), conn.tls, dsn, results).await;
                }
            }
        }
        // A session that ended after its last reply (an unprompted 421, say) takes no
        // more transactions, and has no QUIT to say.
        if broken || conn.is_closed() {
            return;
        }
        if sent >= policy.max_messages_per_connection || ctx.stop.is_stopping() {
            break;
        }
        match take_or_wait(ctx, queue).await {
            Some(j) => jobs.push(j),
            None => break,
        }
    }
    conn.quit().await;
}

/// The envelope of `job` for the client.
fn envelope(job: &Job) -> Envelope {
    Envelope {
        sender: job.message.sender.clone(),
        recipients: job.addresses().map(str::to_owned).collect(),
        size: job.message.size,
        needs_8bit: job.message.eight_bit,
        needs_smtputf8: job.message.smtputf8,
        mail_dsn: job.message.mail_dsn.to_params(),
        rcpt_dsn: if job.message.rcpt_dsn.is_empty() {
            Vec::new()
        } else {
            job.recipients
                .iter()
                .map(|&i| job.message.recipient_dsn(i).to_params())
                .collect()
        },
    }
}

/// Most transactions written at once to a server that offers CHUNKING and PIPELINING.
/// Each costs the server a reply it writes only after storing the message, so a deeper
/// pipeline mostly adds waiting for the last of them.
const PIPELINE_DEPTH: usize = 32;

/// Content written at once, at most (the first message may exceed it alone).
const PIPELINE_OCTETS: u64 = 256 * 1024;

/// How long an open connection waits for more of its domain's jobs before it says QUIT.
/// A mailing list spreads each message over many domains, so a small domain's jobs come
/// a few milliseconds apart; without the wait, most of them would pay for a connection,
/// a greeting and an EHLO of their own (RFC 5321 §4.5.3.2 lets a server wait 5 minutes
/// for a command, so this is nothing to it).
const LINGER: Duration = Duration::from_millis(200);

/// How often a lingering connection looks for a job.
const LINGER_POLL: Duration = Duration::from_millis(5);

/// The next job of the domain, waiting up to [`LINGER`] for one; `None` when none came,
/// or the shard is stopping.
async fn take_or_wait(ctx: &Rc<ShardContext>, queue: &DomainQueue) -> Option<Job> {
    let until = Instant::now() + LINGER;
    loop {
        if let Some(job) = take(ctx, queue).await {
            return Some(job);
        }
        if ctx.stop.is_stopping() || Instant::now() >= until {
            return None;
        }
        glommio::timer::sleep(LINGER_POLL).await;
    }
}

/// Settles a finished transaction in a task of its own, counted among the shard's
/// delivery work so that a stopping shard waits for it.
fn settle_apart(
    ctx: &Rc<ShardContext>,
    job: Job,
    host: Option<String>,
    tls: Option<&'static str>,
    next_hop_dsn: bool,
    results: Vec<(u32, Reply)>,
) {
    let c = ctx.clone();
    ctx.spawn_counted(async move {
        settle(&c, job, host.as_deref(), tls, next_hop_dsn, results).await;
    });
}

/// The next job of the domain that is not past its age; older ones expire on the way.
async fn take(ctx: &Rc<ShardContext>, queue: &DomainQueue) -> Option<Job> {
    let max_age = ctx.shared.config.delivery.max_age;
    while let Some(job) = queue.pop(ctx.id) {
        if expired(job.message.received_micros, max_age, now_micros()) {
            expire(ctx, job).await;
            continue;
        }
        return Some(job);
    }
    None
}

/// The domain cannot be reached now (its route did not resolve, or no host took a
/// connection): `job` and every job already waiting for the domain get `reply`, as
/// Postfix treats a dead destination, instead of each paying for the same lookup or the
/// same connect timeouts on a connection of its own.
async fn fail_domain(ctx: &Rc<ShardContext>, queue: &DomainQueue, job: Job, reply: Reply) {
    fail(ctx, job, None, None, reply.clone()).await;
    while let Some(job) = take(ctx, queue).await {
        let results = job.recipients.iter().map(|&i| (i, reply.clone())).collect();
        settle_apart(ctx, job, None, None, false, results);
    }
}

async fn fail(
    ctx: &Rc<ShardContext>,
    job: Job,
    host: Option<&str>,
    tls: Option<&str>,
    reply: Reply,
) {
    let results = job.recipients.iter().map(|&i| (i, reply.clone())).collect();
    settle(ctx, job, host, tls, false, results).await;
}
