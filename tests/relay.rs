//! No open relay: from outside `relay.networks`, mail is accepted only for `relay.domains`,
//! and no address trick gets a foreign domain past RCPT.

mod common;

use common::{Client, Pigeon};

#[test]
fn address_tricks_never_open_the_relay() {
    let mut pigeon = Pigeon::start(
        "127.0.0.160",
        "",
        "[relay]\nnetworks = [\"10.0.0.0/8\"]\ndomains = [\"local.test\"]\n",
    );
    let tricks = [
        "b@elsewhere.test",
        "b@ELSEWHERE.TEST",
        "b%elsewhere.test@other.test",
        "b%local.test@elsewhere.test",
        "@local.test:b@elsewhere.test",
        "@local.test,@local.test:b@elsewhere.test",
        "\"b@local.test\"@elsewhere.test",
        "\"b%local.test\"@elsewhere.test",
        "b@elsewhere.test@local.test",
        "b@local.test@elsewhere.test",
        "b@local.test.elsewhere.test",
        "b@xlocal.test",
        "b@local.test.",
        "b@elsewhere.test.",
        "b@[127.0.0.1]",
        "b@[192.0.2.1]",
        "b@[IPv6:::1]",
        "elsewhere.test!b@other.test",
        "b@local.test\\@elsewhere.test",
        "b @local.test",
        "b@local..test",
        "b@-local.test",
        "<b@elsewhere.test>",
    ];
    let mut accepted = Vec::new();
    for trick in tricks {
        let mut c = Client::greeted(pigeon.addr);
        assert_eq!(c.cmd("EHLO outsider.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<a@outsider.test>").code, 250);
        let r = c.cmd(&format!("RCPT TO:<{trick}>"));
        if r.code < 500 {
            accepted.push(format!("{trick} -> {} {}", r.code, r.text));
        }
    }
    assert!(
        accepted.is_empty(),
        "relay tricks accepted:\n{}",
        accepted.join("\n")
    );
    // The domain we do accept mail for still works, in any case.
    let mut c = Client::greeted(pigeon.addr);
    assert_eq!(c.cmd("EHLO outsider.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@outsider.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@local.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<B@Local.Test>").code, 250);
    assert!(pigeon.stop().success());
}
