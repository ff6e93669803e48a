"""A real SMTP sink for pigeon's delivery tests, on aiosmtpd (a server nobody on the
pigeon team wrote).

Usage: sink.py OUTDIR ADDR=BEHAVIOUR [ADDR=BEHAVIOUR ...]

Each ADDR is ip:port. BEHAVIOUR is one of
  accept          250 for everything
  tempfail-once   451 4.3.0 to the first RCPT of each recipient, 250 afterwards
  tempfail        451 4.3.0 to every RCPT
  reject          550 5.1.1 to every RCPT
  greet-421       a 421 greeting, then close (a busy server)
Every transaction is appended to OUTDIR/transactions.jsonl as one JSON object:
{addr, peer, mail_from, rcpt_tos, data_file, size}; each message's content (as received,
dot-stuffing removed) goes to OUTDIR/msg-N.eml. Every EHLO/HELO (one per connection) is
appended to OUTDIR/connections.jsonl. OUTDIR/ready appears once all listeners are up.
Stops on SIGTERM.
"""

import asyncio
import itertools
import json
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

LOCK = threading.Lock()
COUNTER = itertools.count(1)


def append(path, obj):
    with LOCK:
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")


class Handler:
    def __init__(self, addr, behaviour, out):
        self.addr = addr
        self.behaviour = behaviour
        self.out = out
        self.seen = set()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        append(os.path.join(self.out, "connections.jsonl"),
               {"addr": self.addr, "peer": list(session.peer), "helo": hostname})
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        append(os.path.join(self.out, "connections.jsonl"),
               {"addr": self.addr, "peer": list(session.peer), "helo": hostname})
        session.host_name = hostname
        return "250 {}".format(server.hostname)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.behaviour == "reject":
            return "550 5.1.1 <{}>: Recipient address rejected: User unknown".format(address)
        if self.behaviour == "tempfail":
            return "451 4.3.0 <{}>: Try again later".format(address)
        if self.behaviour == "tempfail-once" and address not in self.seen:
            self.seen.add(address)
            return "451 4.3.0 <{}>: Try again later".format(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(COUNTER)
        name = "msg-{}.eml".format(n)
        data = envelope.original_content or envelope.content
        with open(os.path.join(self.out, name), "wb") as f:
            f.write(data)
        append(os.path.join(self.out, "transactions.jsonl"), {
            "addr": self.addr,
            "peer": list(session.peer),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data_file": name,
            "size": len(data),
        })
        return "250 2.0.0 Ok: queued as sink-{}".format(n)


class Busy:
    """A server that answers every connection with 421 and closes it."""

    def __init__(self, host, port, out):
        self.host, self.port, self.out = host, port, out
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader, writer):
        append(os.path.join(self.out, "refused.jsonl"), {"addr": "{}:{}".format(self.host, self.port)})
        writer.write(b"421 4.3.2 Too busy, try later\r\n")
        await writer.drain()
        writer.close()

    def start(self):
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, self.host, self.port))
        self.server = server
        self.thread.start()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def main():
    out = sys.argv[1]
    controllers = []
    for spec in sys.argv[2:]:
        addr, behaviour = spec.split("=")
        host, port = addr.rsplit(":", 1)
        if behaviour == "greet-421":
            busy = Busy(host, int(port), out)
            busy.start()
            controllers.append(busy)
            continue
        handler = Handler(addr, behaviour, out)
        c = Controller(handler, hostname=host, port=int(port),
                       server_kwargs={"data_size_limit": 0}, decode_data=False,
                       enable_SMTPUTF8=True)
        c.start()
        controllers.append(c)
    open(os.path.join(out, "ready"), "w").close()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Bounded: a sink never outlives its test by more than ten minutes.
    stop.wait(600)
    for c in controllers:
        c.stop()


if __name__ == "__main__":
    main()
