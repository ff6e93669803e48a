//! One shard's delivery side over a real spool in a temporary directory, and no sockets:
//! the spool writer, segment reader, delivery log, settler, agents and queue manager wired
//! as `runtime::shard::wire` wires them; messages written the way intake writes them; and
//! readers for what the spool, the log and the queues hold afterwards.

use crate::smtp::dsn::{MailDsn, RcptDsn};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clock::now_micros;
use crate::config::{Config, DomainConfig, FsyncPolicy};
use crate::deliver::agent::Agents;
use crate::deliver::client::tls::TlsClients;
use crate::deliver::dns::Resolver;
use crate::deliver::report::AttemptReport;
use crate::outcome::log::{DeliveryLog, ShardLog};
use crate::outcome::settle::Settler;
use crate::qmgr::QueueManager;
use crate::queue::content::read_content;
use crate::queue::deferred::Deferred;
use crate::queue::message::{Job, NewMessage, QueuedMessage};
use crate::queue::queues::Queues;
use crate::runtime::shutdown::ShardStop;
use crate::smtp::address::parse_mailbox;
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::reply::{Enhanced, Reply};
use crate::spool::commit::{ShardSpool, SpoolOptions};
use crate::spool::location::{segment_path, SegmentKey};
use crate::spool::read::SegmentReader;
use crate::spool::record::{encode_message, MessageId, OutcomeRecord, Record};
use crate::spool::recover::{list_segments, scan, MappedSegment};
use crate::spool::replay::{replay, Replay};
use crate::spool::segments::Segments;

/// The content of every test message, in wire form.
pub const BODY: &[u8] = b"From: Sam <sam@sender.example>\r\n\
To: Robin <r@b.example>\r\n\
Subject: Quarterly figures\r\n\
\r\n\
The figures are attached.\r\n";

/// The server that answers in reports with a connection.
pub const MX: &str = "mx.b.example";

pub(crate) use crate::task::tests::on_executor;

/// The built-in defaults for one shard, changed by `tweak`. The spool and log paths are
/// set by [`Shard::start`].
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::defaults();
    c.shards = 1;
    c.hostname = "mx.pigeon.test".into();
    // The durable path, as in production: every append synced before it is answered.
    c.spool.fsync = FsyncPolicy::Always;
    tweak(&mut c);
    c
}

/// No connection is ever opened by the queue manager's loop: every domain's limit is 0.
pub fn no_connections(c: &mut Config) {
    c.domain.insert(
        "default".into(),
        DomainConfig {
            max_connections: Some(0),
            ..DomainConfig::default()
        },
    );
}

/// Waits until `done` holds, looking every 10 ms; fails the test after 10 s.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// A message as a client gave it.
pub struct Mail<'a> {
    sender: &'a str,
    mail_params: &'a str,
    recipients: Vec<(&'a str, &'a str)>,
    age: Duration,
}

impl<'a> Mail<'a> {
    /// From `sender` (`""` for `<>`), just received, without parameters.
    pub fn from(sender: &'a str) -> Mail<'a> {
        Mail {
            sender,
            mail_params: "",
            recipients: Vec::new(),
            age: Duration::ZERO,
        }
    }

    /// Adds a recipient with its RCPT parameters.
    pub fn to(mut self, recipient: &'a str, params: &'a str) -> Mail<'a> {
        self.recipients.push((recipient, params));
        self
    }

    /// The MAIL parameters.
    pub fn params(mut self, mail_params: &'a str) -> Mail<'a> {
        self.mail_params = mail_params;
        self
    }

    /// Received `age` ago.
    pub fn aged(mut self, age: Duration) -> Mail<'a> {
        self.age = age;
        self
    }

    fn envelope(&self) -> Envelope {
        Envelope {
            peer: ([192, 0, 2, 10], 53124).into(),
            helo: "client.sender.example".into(),
            protocol: "ESMTP",
            sender: (!self.sender.is_empty())
                .then(|| parse_mailbox(self.sender.as_bytes(), false).unwrap()),
            mail_params: self.mail_params.into(),
            // As the session parses them.
            mail_dsn: MailDsn::from_params(self.mail_params),
            recipients: self
                .recipients
                .iter()
                .map(|(r, params)| Recipient {
                    mailbox: parse_mailbox(r.as_bytes(), false).unwrap(),
                    params: (*params).into(),
                    dsn: RcptDsn::from_params(params),
                })
                .collect(),
            smtputf8: false,
            body_hashes: Vec::new(),
            auth: None,
        }
    }
}

/// A record read back from the spool, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A live message record.
    Message {
        /// The queue id.
        id: MessageId,
        /// The reverse-path; empty for `<>`.
        sender: String,
        /// The recipients, in record order.
        recipients: Vec<String>,
        /// The content, in wire form.
        content: String,
    },
    /// A killed message record.
    Dead,
    /// An outcome record.
    Outcome(OutcomeRecord),
    /// A settled record (a copy forward).
    Settled(MessageId),
}

impl Found {
    /// The content of a message record.
    pub fn content(&self) -> &str {
        match self {
            Found::Message { content, .. } => content,
            other => panic!("not a message record: {other:?}"),
        }
    }
}

/// One shard's delivery side on a spool of its own.
pub struct Shard {
    /// The queue manager under test (with its settler, agents and queues).
    pub qm: Rc<QueueManager>,
    /// The stop the queue manager watches.
    pub stop: Rc<ShardStop>,
    /// The spool directory.
    pub spool: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Shard {
    /// Wires a shard over a fresh spool and log; must run on a glommio executor (the
    /// spool's committer runs as a task of it).
    pub fn start(mut config: Config) -> Shard {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("spool");
        std::fs::create_dir_all(&spool_path).unwrap();
        let log_path = dir.path().join("delivery.log");
        config.spool.path = spool_path.clone();
        config.log.delivery = log_path.clone();
        let config = Arc::new(config);
        let segments = Arc::new(Segments::new(spool_path.clone()));
        let options = SpoolOptions {
            segments: segments.clone(),
            path: spool_path.clone(),
            fsync: config.spool.fsync,
            segment_size: config.spool.segment_size.0,
            min_free_space: 0,
        };
        let (spool, committer) = ShardSpool::start(0, 0, options).unwrap();
        glommio::spawn_local(committer).detach();
        let log = ShardLog::new(Arc::new(DeliveryLog::open(&log_path).unwrap()));
        let reader = Rc::new(SegmentReader::new(spool_path.clone()));
        let queues = Arc::new(Queues::new(config.clone()));
        let stop = Rc::new(ShardStop::default());
        // Never queried: no test lets an agent start.
        let nameserver = SocketAddr::from(([127, 0, 0, 1], 9));
        let agents = Rc::new(Agents {
            shard: 0,
            helo: config.hostname.clone(),
            port: config.delivery.port,
            max_age: config.delivery.max_age,
            resolver: Resolver::new(vec![nameserver], Duration::from_secs(1)),
            tls: TlsClients::new(rustls::RootCertStore::empty()).unwrap(),
            reader: reader.clone(),
            queues: queues.clone(),
            stop: stop.clone(),
        });
        let settler = Settler {
            spool,
            reader,
            segments,
            queues,
            log,
            delivery: config.delivery.clone(),
            hostname: config.hostname.clone(),
        };
        let qm = QueueManager::new(
            settler,
            agents,
            Deferred::new(),
            config.spool.compact_after,
            stop.clone(),
        );
        Shard {
            qm,
            stop,
            spool: spool_path,
            log: log_path,
            _dir: dir,
        }
    }

    /// Spools `mail` as intake does (one record, durable) and returns the queued message.
    /// It is not put on a ready queue: tests hand its jobs to the settler themselves.
    pub async fn receive(&self, mail: Mail<'_>) -> Arc<QueuedMessage> {
        let spool = &self.qm.settler.spool;
        let envelope = mail.envelope();
        let id = spool.next_id();
        let received_micros = now_micros() - mail.age.as_micros() as u64;
        let head = encode_message(id, received_micros, &envelope, false, &[BODY]);
        let record = spool.append(vec![head, BODY.to_vec()], 1).await.unwrap();
        QueuedMessage::new(NewMessage {
            id,
            record,
            received_micros,
            sender: mail.sender.to_owned(),
            recipients: envelope.recipients.iter().map(|r| r.mailbox.as_str()),
            smtputf8: false,
            eight_bit: false,
            size: BODY.len() as u64,
            states: vec![0; envelope.recipients.len()],
        })
        .with_dsn(
            &envelope.mail_dsn,
            envelope.recipients.iter().map(|r| &r.dsn),
        )
        .into_shared()
    }

    /// Every record of every segment, in (shard, seq, offset) order. A torn or corrupt
    /// record fails the test: the settler only ever appends whole ones.
    pub fn records(&self) -> Vec<Found> {
        let mut found = Vec::new();
        for seg in list_segments(&self.spool).unwrap() {
            let mapped = MappedSegment::open(&seg.path).unwrap();
            let scanned = scan(mapped.bytes());
            assert_eq!(scanned.stopped, None, "segment {} damaged", seg.seq);
            for (_, record) in scanned.records {
                found.push(match record {
                    Record::Message(m) => Found::Message {
                        id: m.id,
                        sender: m.sender.to_owned(),
                        recipients: m.recipients.iter().map(|(r, _)| r.to_string()).collect(),
                        content: String::from_utf8(m.content.to_vec()).unwrap(),
                    },
                    Record::DeadMessage => Found::Dead,
                    Record::Outcome(o) => Found::Outcome(o),
                    Record::Settled(s) => Found::Settled(s.id),
                });
            }
        }
        found
    }

    /// The outcome records in the spool.
    pub fn outcomes(&self) -> Vec<OutcomeRecord> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                Found::Outcome(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// The live message records in the spool.
    pub fn messages(&self) -> Vec<Found> {
        self.records()
            .into_iter()
            .filter(|r| matches!(r, Found::Message { .. }))
            .collect()
    }

    /// What a restart would find in the spool.
    pub fn replay(&self) -> Replay {
        replay(&self.spool).unwrap()
    }

    /// Whether the file of segment `seq` of this shard is still on disk.
    pub fn segment_exists(&self, seq: u64) -> bool {
        segment_path(&self.spool, 0, seq).exists()
    }

    /// References the live records in segment `seq` hold.
    pub fn refs(&self, seq: u64) -> i64 {
        self.qm.settler.segments.refs(SegmentKey { shard: 0, seq })
    }

    /// Every line of the delivery log so far (the shard's buffer flushed first).
    pub fn log(&self) -> Vec<Value> {
        self.qm.settler.log.flush();
        read_log(&self.log)
    }

    /// The log lines of `event`.
    pub fn logged(&self, event: &str) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|l| l["event"] == event)
            .collect()
    }

    /// The content an agent would send for `job`: read from the spool where its message
    /// says its record is.
    pub fn content_of(&self, job: &Job) -> String {
        let content = read_content(&self.qm.settler.reader, &job.message).unwrap();
        String::from_utf8(content.bytes().to_vec()).unwrap()
    }

    /// Takes the job waiting on the ready queue of `domain`, if any.
    pub fn ready_job(&self, domain: &str) -> Option<Job> {
        self.qm.queues.ready.domain(domain).pop(0)
    }
}

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A job of `message`'s recipients `recipients`, after `attempts` attempts.
pub fn job(message: &Arc<QueuedMessage>, recipients: &[u32], attempts: u32) -> Job {
    Job {
        message: message.clone(),
        recipients: recipients.into(),
        attempts,
    }
}

/// What an agent reports after a transaction with [`MX`] over TLS 1.3.
pub fn answered(job: Job, results: Vec<(u32, Reply)>, next_hop_dsn: bool) -> AttemptReport {
    AttemptReport {
        job,
        results,
        host: Some(MX.into()),
        tls: Some("TLSv1.3"),
        next_hop_dsn,
        took: Duration::from_millis(20),
    }
}

/// A reply with an enhanced status code.
pub fn reply(code: u16, enhanced: (u8, u16, u16), text: &'static str) -> Reply {
    Reply::new(code, Enhanced(enhanced.0, enhanced.1, enhanced.2), text)
}

/// The `next_attempt` a log line gives for a due time in microseconds.
pub use crate::outcome::log::next_attempt as log_time;
