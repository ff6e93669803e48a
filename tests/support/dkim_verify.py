"""Verify DKIM signatures with dkimpy, offline: the independent verifier for tests/dkim.rs.

Reads JSON on stdin: {"records": {"<selector>._domainkey.<domain>": "<TXT value>"},
"messages": ["<base64 of a message>", ...]} and writes JSON on stdout:
{"dkimpy": "<version>", "results": [[{"ok": bool, "d": str, "s": str, "error": str}, ...
one per DKIM-Signature field, top first], ... one list per message]}.

dkimpy looks keys up through dnsfunc, which answers from "records" only: no network.
"""

import base64
import json
import logging
import sys
from importlib.metadata import version

import dkim


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    request = json.load(sys.stdin)
    records = {k.lower().rstrip("."): v for k, v in request["records"].items()}

    def dnsfunc(name, timeout=5):
        key = name.decode() if isinstance(name, bytes) else name
        value = records.get(key.lower().rstrip("."))
        return value.encode() if value is not None else None

    results = []
    for b64 in request["messages"]:
        message = base64.b64decode(b64)
        collect = Collect()
        logger = logging.getLogger("dkim-verify")
        logger.handlers = [collect]
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        d = dkim.DKIM(message, logger=logger, minkey=1024)
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
        per_message = []
        for idx in range(count):
            collect.lines.clear()
            try:
                ok = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
                error = "" if ok else "; ".join(collect.lines[-3:])
            except Exception as e:  # dkimpy raises for malformed signatures
                ok, error = False, "%s: %s" % (type(e).__name__, e)
            sig = dict(d.signature_fields) if getattr(d, "signature_fields", None) else {}
            per_message.append({
                "ok": ok,
                "d": sig.get(b"d", b"").decode(errors="replace"),
                "s": sig.get(b"s", b"").decode(errors="replace"),
                "error": error,
            })
        results.append(per_message)
    json.dump({"dkimpy": version("dkimpy"), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
