#!/usr/bin/env bash
# syscalls.sh: system calls per message in pigeon for compare.sh's scenario 1, counted
# with `strace -c -f` (every thread of the server).
#
#   loadtest/syscalls.sh [MESSAGES]           (default 5000)
#
# Needs target/release/pigeon and target/release/pigeon-load (or BIN=dir), strace, jq.
# blast (20 sessions, 5 KiB, one recipient) -> pigeon (compare.sh's configuration,
# fsync always) -> pigeon-load sink, on 127.0.0.x; bounded by the message count and a
# time cap; only the processes this script started are stopped, by pid. Prints the calls
# per message of every system call above 0.05 per message.
set -euo pipefail

MESSAGES=${1:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
PORT_BASE=${PORT_BASE:-26100}
CAP=${RUN_CAP:-120}
SINK_ADDR=127.0.0.2:$PORT_BASE
PIGEON_ADDR=127.0.0.3:$((PORT_BASE + 1))
for tool in strace jq; do
    command -v $tool >/dev/null || { echo "syscalls.sh: $tool missing" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pigeon-syscalls.XXXXXX")
PIDS=()
cleanup() { # the traced pigeon first: strace, killed, would detach and leave it running
    local p c
    for p in "${PIDS[@]:-}"; do
        [[ -n $p ]] || continue
        for c in $(pgrep -P "$p" || true); do kill "$c" 2>/dev/null || true; done
        kill "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

wait_for() { # FILE PATTERN
    for ((i = 0; i < 400; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "syscalls.sh: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

"$BIN/pigeon-load" sink --listen "$SINK_ADDR" --expect-recipients "$MESSAGES" \
    --max-seconds "$CAP" --json "$WORK/sink.json" >/dev/null 2>"$WORK/sink.err" &
SINK=$!
PIDS+=("$SINK")
wait_for "$WORK/sink.err" "listening on"

cat >"$WORK/pigeon.toml" <<CONF
hostname = "pigeon.compare.test"
shards = 0

[spool]
path = "$WORK/spool"
fsync = "always"
min_free_space = "10MiB"

[[listener]]
address = "$PIGEON_ADDR"
mode = "relay"

[relay]
networks = ["127.0.0.0/8"]

[log]
delivery = "$WORK/delivery.log"

[domain.default]
route = ["$SINK_ADDR"]
max_connections = 32
CONF
strace -c -f -o "$WORK/strace.txt" "$BIN/pigeon" serve --config "$WORK/pigeon.toml" \
    >/dev/null 2>"$WORK/pigeon.err" &
STRACE=$!
PIDS+=("$STRACE")
wait_for "$WORK/pigeon.err" "ready"

"$BIN/pigeon-load" blast --target "$PIGEON_ADDR" --sessions 20 --messages "$MESSAGES" \
    --size 5120 --recipients 1 --domains 1 --max-seconds "$CAP" \
    --json "$WORK/blast.json" 2>"$WORK/blast.err"
wait "$SINK" || true
got=$(jq .recipients "$WORK/sink.json")
# pigeon (strace's child) is stopped cleanly; strace then writes its summary and exits.
SERVER=$(pgrep -P "$STRACE" -x pigeon || true)
[[ -n $SERVER ]] && kill -TERM "$SERVER"
status=0
wait "$STRACE" || status=$?
PIDS=()
[[ $status == 0 ]] || echo "syscalls.sh: strace exited with $status" >&2
echo "messages: $MESSAGES sent, $got delivered"
awk -v n="$MESSAGES" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 {
        name = $NF; calls = ($4 ~ /^[0-9]+$/) ? $4 : 0
        if (calls / n >= 0.05) printf "%-18s %9d calls  %6.2f per message\n", name, calls, calls / n
    }' "$WORK/strace.txt" | sort -k4 -n -r
rm -rf "$WORK"
