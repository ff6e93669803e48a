#!/usr/bin/env bash
# compare.sh: pigeon side by side with Postfix and with the raw wire, on loopback.
#
#   loadtest/compare.sh [RESULTS_FILE]        (default ./compare-results.md)
#
# Needs: target/release/pigeon and target/release/pigeon-load
# (cargo build --release --workspace), root for Postfix (installs Debian's postfix if
# missing; only its programs are used, the instance's configuration is loadtest/postfix/),
# openssl, jq, awk. Everything listens on 127.0.0.x; every run is bounded by a message
# count and a time cap; only the processes this script started are stopped, by pid.
#
# For each scenario, back to back:
#   wire     blast -> pigeon-load sink
#   pigeon   blast -> pigeon (spool.fsync = "always", temp spool) -> sink
#   postfix  blast -> Postfix (relayhost = the sink, default durability) -> sink
#   (scenario 1 also: pigeon with spool.fsync = "never")
# An MTA run is timed from blast start until the sink has every recipient (the sink's
# --expect-recipients), i.e. end to end.
#
# Counts can be scaled with environment variables: S1_MESSAGES (10000), S2_MESSAGES
# (200), S3_MESSAGES (200); SESSIONS (20); PORT_BASE (26000).
set -euo pipefail

RESULTS=${1:-./compare-results.md}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
LOAD=$BIN/pigeon-load
PIGEON=$BIN/pigeon
S1_MESSAGES=${S1_MESSAGES:-10000}
S2_MESSAGES=${S2_MESSAGES:-200}
S3_MESSAGES=${S3_MESSAGES:-200}
SESSIONS=${SESSIONS:-20}
PORT_BASE=${PORT_BASE:-26000}
RUN_CAP=${RUN_CAP:-150} # seconds, hard cap of any one run

SINK_ADDR=127.0.0.2:$PORT_BASE
PIGEON_ADDR=127.0.0.3:$((PORT_BASE + 1))
# Postfix wants inet_interfaces to be an address of an interface: 127.0.0.1 (lo), not .4.
POSTFIX_IP=127.0.0.1
POSTFIX_PORT=$((PORT_BASE + 2))
POSTFIX_ADDR=$POSTFIX_IP:$POSTFIX_PORT

for b in "$LOAD" "$PIGEON"; do
    [[ -x $b ]] || { echo "compare.sh: $b missing: cargo build --release --workspace" >&2; exit 1; }
done
for tool in jq openssl; do
    command -v $tool >/dev/null || { echo "compare.sh: $tool missing" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pigeon-compare.XXXXXX")
chmod 755 "$WORK" # Postfix daemons (user postfix) must reach their queue and data dirs
CLK_TCK=$(getconf CLK_TCK)
PIDS=()          # processes we started and have not reaped yet
POSTFIX_DIR=""   # set while our Postfix instance may be running

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n $p ]] && kill "$p" 2>/dev/null || true
    done
    if [[ -n $POSTFIX_DIR ]]; then
        postfix -c "$POSTFIX_DIR" stop >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # remove $1 from PIDS
    local keep=() p
    for p in "${PIDS[@]:-}"; do [[ -n $p && $p != "$1" ]] && keep+=("$p"); done
    PIDS=("${keep[@]:-}")
}

wait_for_line() { # FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare.sh: timed out waiting for '$2' in $1:" >&2
    cat "$1" >&2 || true
    return 1
}

wait_for_port() { # IP PORT SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "compare.sh: nothing listening on $1:$2" >&2
    return 1
}

# CPU ticks of one process: "utime+stime cutime+cstime" (the second: reaped children,
# e.g. Postfix services that exited during the run).
ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) } # the fields after "(comm)"; field 3 of stat is field 1 here
    # shellcheck disable=SC2086
    set -- $stat
    echo "$((${12} + ${13}))" "$((${14} + ${15}))"
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Postfix: the master and its live children (smtpd, cleanup, qmgr, smtp, ...).
postfix_pids() { echo "$1"; pgrep -P "$1" || true; }
postfix_ticks() { # master's own + its reaped children + live children
    local master=$1 total=0 p t c
    read -r t c < <(ticks "$master")
    total=$((t + c))
    for p in $(pgrep -P "$master" || true); do
        read -r t c < <(ticks "$p")
        total=$((total + t))
    done
    echo "$total"
}
postfix_hwm() {
    local total=0 p
    for p in $(postfix_pids "$1"); do total=$((total + $(hwm_kib "$p"))); done
    echo "$total"
}

# --- sink -----------------------------------------------------------------------------

start_sink() { # RUN EXPECTED_RECIPIENTS
    "$LOAD" sink --listen "$SINK_ADDR" --expect-recipients "$2" --max-seconds "$RUN_CAP" \
        --json "$WORK/$1.sink.json" >/dev/null 2>"$WORK/$1.sink.err" &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_for_line "$WORK/$1.sink.err" "listening on" 10
}

wait_sink() {
    wait "$SINK_PID" || true
    forget_pid "$SINK_PID"
}

# --- pigeon ---------------------------------------------------------------------------

start_pigeon() { # RUN FSYNC
    local dir=$WORK/$1.pigeon
    mkdir -p "$dir"
    cat >"$dir/pigeon.toml" <<EOF
hostname = "pigeon.compare.test"
shards = 0

[spool]
path = "$dir/spool"
fsync = "$2"
min_free_space = "10MiB"

[[listener]]
address = "$PIGEON_ADDR"
mode = "relay"

[relay]
networks = ["127.0.0.0/8"]

[log]
delivery = "$dir/delivery.log"

[domain.default]
route = ["$SINK_ADDR"]
max_connections = 32
EOF
    "$PIGEON" check-config "$dir/pigeon.toml" >/dev/null
    "$PIGEON" serve --config "$dir/pigeon.toml" >"$dir/out" 2>"$dir/err" &
    MTA_PID=$!
    PIDS+=("$MTA_PID")
    wait_for_line "$dir/err" "ready" 20
}

stop_pigeon() {
    kill -TERM "$MTA_PID" 2>/dev/null || true
    wait "$MTA_PID" 2>/dev/null || true
    forget_pid "$MTA_PID"
}

# --- postfix --------------------------------------------------------------------------

ensure_postfix() {
    if ! command -v postfix >/dev/null || ! command -v postconf >/dev/null; then
        log "installing Debian's postfix"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >&2
    fi
}

start_postfix() { # RUN
    local base=$WORK/$1.postfix name
    POSTFIX_DIR=$base/etc
    # postfix enters the queue directory before it creates what is missing in it.
    mkdir -p "$POSTFIX_DIR" "$base/queue"
    # Our own main.cf, master.cf and postfix-files (loadtest/postfix/), filled in: nothing
    # from /etc/postfix, which may hold no main.cf. Everything they do not set (durability,
    # concurrency, in_flow_delay) is Postfix's default; TLS is "may", as Debian's.
    for name in main.cf master.cf postfix-files; do
        sed -e "s|@ETC@|$POSTFIX_DIR|g" -e "s|@BASE@|$base|g" \
            -e "s|@IP@|$POSTFIX_IP|g" -e "s|@PORT@|$POSTFIX_PORT|g" \
            -e "s|@RELAY@|[${SINK_ADDR%:*}]:${SINK_ADDR##*:}|g" \
            -e "s|@HOSTNAME@|postfix.compare.test|g" \
            "$ROOT/loadtest/postfix/$name" >"$POSTFIX_DIR/$name"
    done
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=postfix.compare.test \
        -keyout "$POSTFIX_DIR/key.pem" -out "$POSTFIX_DIR/cert.pem" 2>/dev/null
    postfix -c "$POSTFIX_DIR" check >&2
    postfix -c "$POSTFIX_DIR" start >&2
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $base/queue/pid/master.pid ]] && break
        sleep 0.1
    done
    MTA_PID=$(tr -dc '0-9' <"$base/queue/pid/master.pid")
    wait_for_port "$POSTFIX_IP" "$POSTFIX_PORT" 20
}

stop_postfix() {
    postfix -c "$POSTFIX_DIR" stop >&2 || true
    POSTFIX_DIR=""
}

# --- one run --------------------------------------------------------------------------

ROWS=()   # "scenario|mta|messages|recipients|seconds|cpu_s|rss_kib"

# run SCENARIO MTA TARGET MESSAGES BLAST_ARGS...
run() {
    local scen=$1 mta=$2 target=$3 messages=$4
    shift 4
    local name=$scen.$mta rcpts_per=1 a
    for ((a = 1; a <= $#; a++)); do
        [[ ${!a} == --recipients ]] && { local b=$((a + 1)); rcpts_per=${!b}; }
    done
    local expected=$((messages * rcpts_per))
    log "$name: $messages messages, $expected recipients"

    start_sink "$name" "$expected"
    case $mta in
        pigeon) start_pigeon "$name" always ;;
        pigeon-nofsync) start_pigeon "$name" never ;;
        postfix) start_postfix "$name" ;;
        wire) MTA_PID="" ;;
    esac
    local cpu0=0
    case $mta in
        pigeon*) read -r t c < <(ticks "$MTA_PID"); cpu0=$t ;;
        postfix) cpu0=$(postfix_ticks "$MTA_PID") ;;
    esac

    local t0 t1
    t0=$(date +%s.%N)
    "$LOAD" blast --target "$target" --sessions "$SESSIONS" --messages "$messages" \
        --max-seconds "$RUN_CAP" --json "$WORK/$name.blast.json" "$@" \
        2>"$WORK/$name.blast.err" || log "$name: blast failed (see $WORK/$name.blast.err)"
    wait_sink
    # The end is when the sink saw the last recipient, not when it exited: it then waits
    # up to a second for open connections (an MTA's cached ones) before it reports.
    t1=$(jq -r '.reached_unix // 0' "$WORK/$name.sink.json" 2>/dev/null || echo 0)
    if [[ $t1 == 0 || $t1 == null ]]; then t1=$(date +%s.%N); fi

    local cpu1=0 rss=0
    case $mta in
        pigeon*) read -r t c < <(ticks "$MTA_PID"); cpu1=$t; rss=$(hwm_kib "$MTA_PID"); stop_pigeon ;;
        postfix) cpu1=$(postfix_ticks "$MTA_PID"); rss=$(postfix_hwm "$MTA_PID"); stop_postfix ;;
    esac

    local got secs accepted
    got=$(jq .recipients "$WORK/$name.sink.json")
    accepted=$(jq .messages_accepted "$WORK/$name.blast.json" 2>/dev/null || echo "?")
    if [[ $mta == wire ]]; then
        secs=$(jq .seconds "$WORK/$name.blast.json")
    else
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')
    fi
    [[ $got == "$expected" ]] || log "$name: WARNING sink got $got of $expected recipients"
    local cpu
    cpu=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", d / hz}')
    log "$name: blast accepted $accepted, sink got $got recipients, ${secs}s, cpu ${cpu}s, peak rss ${rss} KiB"
    ROWS+=("$scen|$mta|$messages|$got|$secs|$cpu|$rss")
}

# --- scenarios ------------------------------------------------------------------------

ensure_postfix
T_START=$(date +%s)
log "work dir $WORK"

S1=(--size 5120 --recipients 1 --domains 1)
S2=(--size 5120 --recipients 100 --domains 100 --hot-domain-share 40)
S3=(--size 1048576 --recipients 1 --domains 1)

run s1 wire "$SINK_ADDR" "$S1_MESSAGES" "${S1[@]}"
run s1 pigeon "$PIGEON_ADDR" "$S1_MESSAGES" "${S1[@]}"
run s1 pigeon-nofsync "$PIGEON_ADDR" "$S1_MESSAGES" "${S1[@]}"
run s1 postfix "$POSTFIX_ADDR" "$S1_MESSAGES" "${S1[@]}"

run s2 wire "$SINK_ADDR" "$S2_MESSAGES" "${S2[@]}"
run s2 pigeon "$PIGEON_ADDR" "$S2_MESSAGES" "${S2[@]}"
run s2 postfix "$POSTFIX_ADDR" "$S2_MESSAGES" "${S2[@]}"

run s3 wire "$SINK_ADDR" "$S3_MESSAGES" "${S3[@]}"
run s3 pigeon "$PIGEON_ADDR" "$S3_MESSAGES" "${S3[@]}"
run s3 postfix "$POSTFIX_ADDR" "$S3_MESSAGES" "${S3[@]}"

# --- report ---------------------------------------------------------------------------

FS=$(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
{
    echo "# pigeon vs Postfix vs raw wire ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "- command: \`loadtest/compare.sh $RESULTS\` (S1_MESSAGES=$S1_MESSAGES S2_MESSAGES=$S2_MESSAGES S3_MESSAGES=$S3_MESSAGES SESSIONS=$SESSIONS)"
    echo "- machine: nproc $(nproc), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), spool/queue fs: $FS"
    echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg); whole script: $(($(date +%s) - T_START)) s"
    echo "- postfix: $(postconf -d mail_version 2>/dev/null | sed 's/.*= //'), Postfix's defaults at compatibility_level 3.6 (loadtest/postfix/main.cf), TLS may, relayhost = the sink"
    echo "- time of an MTA run: blast start until the sink has every recipient; wire: blast's own time"
    echo "- CPU: utime+stime of the MTA during the run (Postfix: master + all its children, reaped ones included)"
    echo "- peak RSS: VmHWM (Postfix: sum of VmHWM of master and the children alive at the end)"
    echo
    echo "| scenario | path | messages | recipients | seconds | msg/s | rcpt/s | CPU s / 1000 msg | peak RSS MiB | msg/s vs wire | msg/s vs Postfix |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS='|' read -r scen mta msgs got secs cpu rss <<<"$row"
        wire_secs="" pf_secs=""
        for r2 in "${ROWS[@]}"; do
            IFS='|' read -r s2 m2 _ _ sec2 _ _ <<<"$r2"
            [[ $s2 == "$scen" && $m2 == wire ]] && wire_secs=$sec2
            [[ $s2 == "$scen" && $m2 == postfix ]] && pf_secs=$sec2
        done
        awk -v scen="$scen" -v mta="$mta" -v msgs="$msgs" -v got="$got" -v secs="$secs" \
            -v cpu="$cpu" -v rss="$rss" -v ws="$wire_secs" -v ps="$pf_secs" 'BEGIN {
            mps = msgs / secs; rps = got / secs
            cpu_k = (mta == "wire") ? "-" : sprintf("%.2f", cpu / msgs * 1000)
            rss_m = (mta == "wire") ? "-" : sprintf("%.1f", rss / 1024)
            vw = (mta == "wire" || ws == "") ? "-" : sprintf("%.1f%%", 100 * ws / secs)
            vp = (mta == "wire" || mta == "postfix" || ps == "") ? "-" : sprintf("%.2fx", ps / secs)
            printf "| %s | %s | %d | %d | %.2f | %.0f | %.0f | %s | %s | %s | %s |\n",
                scen, mta, msgs, got, secs, mps, rps, cpu_k, rss_m, vw, vp
        }'
    done
    echo
    echo "Scenarios: s1 = 5 KiB, 1 recipient, $SESSIONS sessions; s2 = mailing list, 5 KiB, 100 recipients over 100 domains, 40% at d0.test; s3 = 1 MiB, 1 recipient."
} | tee "$RESULTS"
log "results written to $RESULTS; logs in $WORK"
