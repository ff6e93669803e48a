#!/usr/bin/env bash
# Verify the pigeon systemd integration files (unit, sysusers.d, tmpfiles.d).
#
# Usage: systemd/check.sh [PATH_TO_PIGEON_BINARY]
#   default binary: <repo>/target/debug/pigeon
#
# Hermetic: nothing is installed on the host. The unit is verified from a
# temp copy whose ExecStart points at the given binary; sysusers and
# tmpfiles are applied into a throwaway --root. Tested with systemd 252.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

bin="${1:-$repo/target/debug/pigeon}"
if [[ ! -e "$bin" ]]; then
    echo "check.sh: pigeon binary not found: $bin (run cargo build or pass a path)" >&2
    exit 1
fi
bin="$(realpath "$bin")"
if [[ ! -x "$bin" ]]; then
    echo "check.sh: not executable: $bin" >&2
    exit 1
fi

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool not found" >&2; exit 1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------- unit file
unit_src="$here/pigeon.service"
unit="$tmp/pigeon.service"
# Escape characters special in a sed replacement (we use | as delimiter).
bin_sed="$(printf '%s' "$bin" | sed -e 's/[\\|&]/\\&/g')"
sed -e "s|^ExecStart=/usr/bin/pigeon\\([[:space:]]\\)|ExecStart=$bin_sed\\1|" \
    "$unit_src" >"$unit"
grep -qF "ExecStart=$bin " "$unit" \
    || fail "could not rewrite ExecStart=/usr/bin/pigeon in $unit_src"

# info level shows every warning about the unit (unknown keys, bad values,
# missing executables) without the debug chatter about the job graph.
# --recursive-errors=no: only our unit decides the exit status, not whatever
# other units happen to be installed on this machine.
set +e
out="$(SYSTEMD_LOG_LEVEL=info systemd-analyze verify --man=no \
        --recursive-errors=no "$unit" 2>&1)"
rc=$?
set -e
# systemd-analyze sometimes complains about unrelated system units; only
# lines naming our unit count.
ours="$(printf '%s\n' "$out" | grep -F 'pigeon.service' || true)"
if [[ $rc -ne 0 || -n "$ours" ]]; then
    printf '%s\n' "$out" >&2
    fail "systemd-analyze verify pigeon.service (exit $rc)"
fi

# ---------------------------------------------------------------- sysusers.d
sysusers="$here/pigeon.sysusers"
root="$tmp/root"
mkdir -p "$root/etc"

# --dry-run (available in 252) parses the snippet and reports what it would do.
set +e
out="$(SYSTEMD_LOG_LEVEL=notice systemd-sysusers --root="$root" --dry-run "$sysusers" 2>&1)"
rc=$?
set -e
if [[ $rc -ne 0 || -n "$out" ]]; then
    printf '%s\n' "$out" >&2
    fail "systemd-sysusers --dry-run pigeon.sysusers (exit $rc)"
fi

# Actually create the account, but only inside the throwaway root, so the
# tmpfiles check below can resolve user/group "pigeon" from $root/etc/passwd.
set +e
out="$(SYSTEMD_LOG_LEVEL=notice systemd-sysusers --root="$root" "$sysusers" 2>&1)"
rc=$?
set -e
if [[ $rc -ne 0 || -n "$out" ]]; then
    printf '%s\n' "$out" >&2
    fail "systemd-sysusers --root pigeon.sysusers (exit $rc)"
fi
grep -q '^pigeon:[^:]*:[0-9]*:[0-9]*:[^:]*:/var/lib/pigeon:/usr/sbin/nologin$' "$root/etc/passwd" \
    || fail "sysusers did not create user pigeon with home /var/lib/pigeon and nologin shell"
grep -q '^pigeon:' "$root/etc/group" || fail "sysusers did not create group pigeon"

# ---------------------------------------------------------------- tmpfiles.d
tmpfiles="$here/pigeon.tmpfiles"
# systemd-tmpfiles in 252 has no --dry-run, so apply the snippet for real
# into the throwaway root instead (it resolves users from $root/etc/passwd).
# chown to the pigeon uid needs root; unprivileged runs skip this step.
if [[ $EUID -eq 0 ]]; then
    set +e
    out="$(SYSTEMD_LOG_LEVEL=notice systemd-tmpfiles --root="$root" --create "$tmpfiles" 2>&1)"
    rc=$?
    set -e
    if [[ $rc -ne 0 || -n "$out" ]]; then
        printf '%s\n' "$out" >&2
        fail "systemd-tmpfiles --create pigeon.tmpfiles (exit $rc)"
    fi
    uid="$(awk -F: '$1 == "pigeon" { print $3 }' "$root/etc/passwd")"
    gid="$(awk -F: '$1 == "pigeon" { print $3 }' "$root/etc/group")"
    [[ "$(stat -c '%a %u %g' "$root/var/lib/pigeon/spool")" == "700 $uid $gid" ]] \
        || fail "/var/lib/pigeon/spool is not 0700 pigeon:pigeon"
    [[ "$(stat -c '%a %u %g' "$root/etc/pigeon")" == "755 0 0" ]] \
        || fail "/etc/pigeon is not 0755 root:root"
else
    echo "check.sh: not root, skipping systemd-tmpfiles --create check" >&2
fi

echo "systemd units: ok"
