//! One delivery agent's connection: take jobs for a domain from its ready queue, connect
//! to the first host that answers, run one transaction per job on the same connection (up
//! to `max_messages_per_connection`), and report each job's results
//! ([`AttemptReport`]) to the queue manager, which settles them.
//!
//! Under `tls = "opportunistic"` a failed TLS handshake is followed by one more connection
//! to the same address in plain text, as Postfix does: a server whose TLS is broken still
//! gets its mail, rather than none at all. Under `required` and `verify` it is a deferral.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::clock::now_micros;
use crate::config::DomainPolicy;
use crate::deliver::agent::Agents;
use crate::deliver::client::driver::{Connection, TlsUse};
use crate::deliver::client::envelope::Envelope;
use crate::deliver::report::{AttemptReport, Reporter};
use crate::deliver::route::next_hops;
use crate::queue::content::read_content;
use crate::queue::message::Job;
use crate::queue::ready::DomainQueue;
use crate::queue::retry::expired;
use crate::smtp::reply::{Enhanced, Reply};

/// Runs one connection's worth of deliveries for `queue`, reporting every job it takes
/// to `reporter`. The caller holds a connection slot for it.
pub async fn run(
    agents: Rc<Agents>,
    queue: &DomainQueue,
    policy: &DomainPolicy,
    reporter: &dyn Reporter,
) {
    // At a stop, a connection finishes its transaction and quits; one still busy at the
    // deadline is dropped. Its recipients' outcomes were not spooled, so they are tried
    // again after the restart: at least once, never lost.
    future::or(
        deliver(&agents, queue, policy, reporter),
        agents.stop.deadline_passed(),
    )
    .await;
}

async fn deliver(
    agents: &Agents,
    queue: &DomainQueue,
    policy: &DomainPolicy,
    reporter: &dyn Reporter,
) {
    let started = Instant::now();
    let Some(job) = take(agents, queue, reporter) else {
        return;
    };
    let hops = match next_hops(&agents.resolver, agents.port, &queue.domain, policy).await {
        Ok(h) => h,
        Err(reply) => return fail_domain(agents, queue, job, reply, started, reporter),
    };
    let mut last_error = None;
    let mut conn = None;
    'hosts: for hop in &hops {
        for &addr in &hop.addrs {
            let mut tls = TlsUse {
                policy: policy.tls,
                plain: false,
            };
            loop {
                match Connection::open(addr, &hop.name, &agents.helo, tls, &agents.tls).await {
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
        return fail_domain(agents, queue, job, reply, started, reporter);
    };
    let host = conn.host.clone();
    let mut sent = 0;
    let mut jobs = vec![(job, started)];
    loop {
        if let Some(limit) = agents.queues.rate_limit(&queue.domain, policy) {
            let wait = limit.reserve(now_micros());
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
        } else if conn.can_chunk() {
            // Jobs already waiting go out in the same write (a rate-limited domain gets one
            // transaction at a time instead, each after its own wait).
            let max = policy.max_messages_per_connection;
            let mut octets = jobs[0].0.message.size;
            while jobs.len() < PIPELINE_DEPTH
                && sent + (jobs.len() as u32) < max
                && octets < PIPELINE_OCTETS
                && !agents.stop.is_stopping()
            {
                let Some(more) = take(agents, queue, reporter) else {
                    break;
                };
                octets += more.message.size;
                jobs.push((more, Instant::now()));
            }
        }
        let mut ready = Vec::with_capacity(jobs.len());
        for (job, taken) in jobs.drain(..) {
            match read_content(&agents.reader, &job.message) {
                Ok(content) => ready.push((job, taken, content)),
                Err(e) => {
                    tracing::error!(id = %job.message.id, error = %e, "cannot read spooled content");
                    let reply = Reply::new(451, Enhanced(4, 3, 0), "local error reading the spool");
                    let mut report = AttemptReport::all(job, reply, taken.elapsed());
                    report.host = Some(host.clone());
                    report.tls = conn.tls;
                    reporter.report(report);
                }
            }
        }
        let outcomes = if conn.can_chunk() {
            let messages = ready
                .iter()
                .map(|(job, _, content)| (envelope(job), content.bytes()))
                .collect();
            conn.send_many(messages).await
        } else if let Some((job, _, content)) = ready.first() {
            vec![conn.send(envelope(job), content.bytes()).await]
        } else {
            Vec::new()
        };
        let mut broken = false;
        for ((job, taken, _), outcome) in ready.into_iter().zip(outcomes) {
            sent += 1;
            let results = match outcome {
                Ok(results) => results
                    .into_iter()
                    .map(|(i, r)| (job.recipients[i], r))
                    .collect(),
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
                    pending
                        .into_iter()
                        .map(|i| (job.recipients[i], reply.clone()))
                        .collect()
                }
            };
            // The next transaction on this connection does not wait for these outcomes to
            // be durable (a sync): the queue manager settles them in a task of their own.
            reporter.report(AttemptReport {
                results,
                host: Some(host.clone()),
                tls: conn.tls,
                next_hop_dsn: conn.offers_dsn(),
                took: taken.elapsed(),
                job,
            });
        }
        // A session that ended after its last reply (an unprompted 421, say) takes no
        // more transactions, and has no QUIT to say.
        if broken || conn.is_closed() {
            return;
        }
        if sent >= policy.max_messages_per_connection || agents.stop.is_stopping() {
            break;
        }
        match take_or_wait(agents, queue, reporter).await {
            Some(j) => jobs.push((j, Instant::now())),
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

/// The next job of the domain, waiting up to [`LINGER`] for one to be pushed; `None`
/// when none came, or the shard is stopping.
async fn take_or_wait(
    agents: &Agents,
    queue: &DomainQueue,
    reporter: &dyn Reporter,
) -> Option<Job> {
    let until = Instant::now() + LINGER;
    loop {
        if let Some(job) = take(agents, queue, reporter) {
            return Some(job);
        }
        let left = until.saturating_duration_since(Instant::now());
        if agents.stop.is_stopping() || left.is_zero() {
            return None;
        }
        future::or(queue.arrival(left), agents.stop.wait()).await;
    }
}

/// The next job of the domain that is not past its age; older ones are reported expired
/// on the way.
fn take(agents: &Agents, queue: &DomainQueue, reporter: &dyn Reporter) -> Option<Job> {
    while let Some(job) = queue.pop(agents.shard) {
        if expired(job.message.received_micros, agents.max_age, now_micros()) {
            reporter.report(AttemptReport::expired(job));
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
fn fail_domain(
    agents: &Agents,
    queue: &DomainQueue,
    job: Job,
    reply: Reply,
    started: Instant,
    reporter: &dyn Reporter,
) {
    reporter.report(AttemptReport::all(job, reply.clone(), started.elapsed()));
    while let Some(job) = take(agents, queue, reporter) {
        reporter.report(AttemptReport::all(job, reply.clone(), Duration::ZERO));
    }
}
