"""A real SMTP sink for pigeon's delivery tests, on aiosmtpd (a server nobody on the
pigeon team wrote).

Usage: sink.py OUTDIR ADDR=BEHAVIOUR [ADDR=BEHAVIOUR ...]

Each ADDR is ip:port. BEHAVIOUR is one of
  accept          250 for everything
  tempfail-once   451 4.3.0 to the first RCPT of each recipient, 250 afterwards
  tempfail        451 4.3.0 to every RCPT
  reject          550 5.1.1 to every RCPT
  greet-421       a 421 greeting, then close (a busy server)
  greet-554       a 554 greeting (a server that will not talk to us), then 503 to every
                  command but QUIT, which gets 221; each command line is appended to
                  OUTDIR/refused.jsonl as {addr, command}
followed by options, each ",KEY=VALUE":
  cert=PEM,key=PEM  offer STARTTLS with this certificate chain and key (TLS 1.2 and 1.3)
  maxtls=1.2        with cert/key: TLS 1.2 at most
  tls=broken        with cert/key: STARTTLS is offered and answered 220, then the sink sends
                    bytes that are not TLS and closes the connection (a broken TLS stack);
                    a later connection in plain text is served normally
Every transaction is appended to OUTDIR/transactions.jsonl as one JSON object:
{addr, peer, mail_from, rcpt_tos, data_file, size, tls}; tls is the TLS version the
transaction arrived over ("TLSv1.3", ...) or null. Each message's content (as received,
dot-stuffing removed) goes to OUTDIR/msg-N.eml. Every EHLO/HELO (one per connection, two
with STARTTLS) is appended to OUTDIR/connections.jsonl, every STARTTLS command to
OUTDIR/starttls.jsonl. OUTDIR/ready appears once all listeners are up.
Stops on SIGTERM.
"""

import asyncio
import itertools
import json
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, syntax

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
            "tls": tls_version(session),
        })
        return "250 2.0.0 Ok: queued as sink-{}".format(n)


def tls_version(session):
    """The TLS version of the session, None in plain text."""
    info = session.ssl
    if not info:
        return None
    obj = info.get("ssl_object")
    if obj is not None:
        return obj.version()
    cipher = info.get("cipher")
    return cipher[1] if cipher else "unknown"


class TlsSMTP(SMTP):
    """Records every STARTTLS; with broken=True answers it 220 and then breaks the handshake."""

    def __init__(self, *args, out, addr, broken, **kwargs):
        super().__init__(*args, **kwargs)
        self.sink_out, self.sink_addr, self.broken = out, addr, broken

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg):
        append(os.path.join(self.sink_out, "starttls.jsonl"), {"addr": self.sink_addr})
        if not self.broken:
            return await super().smtp_STARTTLS(arg)
        await self.push("220 Ready to start TLS")
        self.transport.write(b"this is not a TLS record\r\n" * 8)
        self.transport.close()


class TlsController(Controller):
    def __init__(self, handler, out, addr, broken, **kwargs):
        super().__init__(handler, **kwargs)
        self.sink_out, self.sink_addr, self.broken = out, addr, broken

    def factory(self):
        return TlsSMTP(self.handler, out=self.sink_out, addr=self.sink_addr,
                       broken=self.broken, **self.SMTP_kwargs)


def tls_context(options):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.get("maxtls") == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(options["cert"], options["key"])
    return ctx


class Refuser:
    """A server that refuses every connection in its greeting: 421 and close (busy), or
    554 and wait for QUIT (RFC 5321 section 3.1), recording the commands it gets."""

    def __init__(self, host, port, out, code):
        self.host, self.port, self.out, self.code = host, port, out, code
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _serve(self, reader, writer):
        addr = "{}:{}".format(self.host, self.port)
        log = os.path.join(self.out, "refused.jsonl")
        append(log, {"addr": addr})
        if self.code == 421:
            writer.write(b"421 4.3.2 Too busy, try later\r\n")
        else:
            writer.write(b"554 5.7.1 No SMTP service here\r\n")
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), 10)
                except asyncio.TimeoutError:
                    break
                if not line:
                    break
                command = line.decode("latin-1").strip()
                append(log, {"addr": addr, "command": command})
                if command.upper() == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                writer.write(b"503 5.5.1 No SMTP service here\r\n")
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
        addr, behaviour = spec.split("=", 1)
        behaviour, *opts = behaviour.split(",")
        options = dict(o.split("=", 1) for o in opts)
        host, port = addr.rsplit(":", 1)
        if behaviour in ("greet-421", "greet-554"):
            refuser = Refuser(host, int(port), out, int(behaviour[-3:]))
            refuser.start()
            controllers.append(refuser)
            continue
        handler = Handler(addr, behaviour, out)
        if "cert" in options:
            c = TlsController(handler, out, addr, options.get("tls") == "broken",
                              hostname=host, port=int(port), data_size_limit=0,
                              decode_data=False, enable_SMTPUTF8=True,
                              tls_context=tls_context(options))
        else:
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
