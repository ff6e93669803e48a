#!/usr/bin/env bash
# memory.sh: pigeon's RSS with 100,000 and 1,000,000 queued recipients, every one deferred.
#
#   loadtest/memory.sh [WORKDIR]          (default: a fresh temporary directory)
#
# Needs target/release/pigeon and target/release/pigeon-load (cargo build --release
# --workspace). Listens on 127.0.8.2 and 127.0.8.3 only; every wait is bounded; stops only
# the processes it started. The sink answers 451 to every RCPT and pigeon retries in an
# hour, so after each blast every recipient sits deferred in the queue; VmRSS is read from
# /proc once the delivery log shows them all deferred (plus 8 s), and again 30 s later.
#
# Two bases: the idle server at start, and the same server after a warm-up that delivered
# 100,000 recipients (the same shape of traffic, to a sink that accepts them) and holds
# nothing queued. The second is the fixed cost of having served traffic at all (the
# runtime's grown rings and buffers, the allocator's pages per size class and thread);
# what grows beyond it is what queued recipients cost.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${BIN:-$ROOT/target/release}
D=${1:-$(mktemp -d "${TMPDIR:-/tmp}/pigeon-memory.XXXXXX")}
mkdir -p "$D"
cat > "$D/p.toml" <<EOT
shards = 2
[spool]
path = "$D/spool"
[[listener]]
address = "127.0.8.3:27001"
[limits]
max_recipients = 1000
[delivery]
retry = ["1h"]
[log]
delivery = "$D/delivery.log"
[domain.default]
route = ["127.0.8.2:27000"]
EOT
"$B/pigeon-load" sink --listen 127.0.8.2:27000 --expect-recipients 100000 --max-seconds 300 \
    > "$D/warm.json" 2>/dev/null &
SINK=$!
"$B/pigeon" serve --config "$D/p.toml" 2> "$D/pigeon.err" &
PIGEON=$!
trap 'kill $PIGEON $SINK 2>/dev/null || true' EXIT
sleep 3
rss() { awk '/VmRSS/ { print $2 }' "/proc/$PIGEON/status"; }
parts() { grep -E "RssAnon|RssFile" "/proc/$PIGEON/status" | tr -s " \t" " " | tr "\n" " "; echo; }
deferred() { grep -c '"deferred"' "$D/delivery.log" 2>/dev/null || true; }
wait_deferred() {
    for _ in $(seq 1 600); do
        [[ $(deferred) -ge $1 ]] && return
        sleep 1
    done
    echo "memory.sh: only $(deferred) of $1 deferred after 600 s" >&2
    exit 1
}
cold=$(rss)
echo "base, idle at start: $cold kB ($(parts))"
"$B/pigeon-load" blast --target 127.0.8.3:27001 --sessions 10 --messages 1000 --recipients 100 \
    --domains 100 --first-recipient 5000000 --max-seconds 300 > /dev/null 2>&1
if ! wait $SINK; then
    echo "memory.sh: the warm-up sink did not get its 100,000 recipients" >&2
    exit 1
fi
"$B/pigeon-load" sink --listen 127.0.8.2:27000 --fault rcpt:451:100 --max-seconds 900 \
    > "$D/sink.json" 2>/dev/null &
SINK=$!
sleep 10
base=$(rss)
echo "base, after delivering 100,000 recipients: $base kB ($(parts))"
"$B/pigeon-load" blast --target 127.0.8.3:27001 --sessions 10 --messages 1000 --recipients 100 \
    --domains 100 --max-seconds 300 > /dev/null 2>&1
wait_deferred 100000
sleep 8
r=$(rss)
echo "100,000 recipients: $r kB, $(( (r - base) * 1024 / 100000 )) bytes each beyond the base ($(( (r - cold) * 1024 / 100000 )) beyond the idle one; $(parts))"
"$B/pigeon-load" blast --target 127.0.8.3:27001 --sessions 10 --messages 9000 --recipients 100 \
    --domains 100 --first-recipient 100000 --max-seconds 600 > /dev/null 2>&1
wait_deferred 1000000
sleep 8
r=$(rss)
echo "1,000,000 recipients: $r kB, $(( (r - base) * 1024 / 1000000 )) bytes each beyond the base ($(( (r - cold) * 1024 / 1000000 )) beyond the idle one; $(parts))"
sleep 30
r=$(rss)
echo "30 s later: $r kB, $(( (r - base) * 1024 / 1000000 )) bytes each beyond the base"
