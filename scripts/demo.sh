#!/bin/bash
# make demo: vm-run at work against a live guest agent, on this machine.
#
# There is no VM yet: the guest agent runs as an unprivileged process in its
# own user, PID, mount, UTS and IPC namespaces (uid 0 and PID 1 inside, as in
# a VM, and nobody outside), listening on a unix socket instead of vsock.
# The host agent runs beside it with --no-vmm, exactly as it runs on a host,
# and vm-run talks to the host agent. Works started as root (the agent
# drops to nobody) or as an ordinary user (it stays that user); either way
# nothing is installed and everything lives in one temporary directory.
#
#   scripts/demo.sh            BUILD (environment) names the build dir
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD/bin" 2>/dev/null && pwd) || {
    echo "demo: $BUILD/bin missing (run make first)" >&2
    exit 1
}
for p in qubes-lite-guest-agent qubes-lite-host-agent vm-run; do
    [ -x "$BIN/$p" ] || { echo "demo: $BIN/$p not built (run make first)" >&2; exit 1; }
done
for t in unshare setpriv script hostname; do
    command -v "$t" >/dev/null || { echo "demo: $t not found (util-linux, hostname)" >&2; exit 1; }
done

VM=demo
tmp=$(mktemp -d -t qubes-lite-demo.XXXXXX)
pids=()

cleanup() {
    local pid
    trap - EXIT INT TERM HUP PIPE
    # Only what this script started, by pid, newest first.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '$ %s\n' "$*"; }

wait_socket() {   # path pid what
    for _ in $(seq 100); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "demo: $3 exited:" >&2; cat "$tmp/$3.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "demo: $3 did not listen on $1:" >&2
    cat "$tmp/$3.log" >&2
    exit 1
}

# --- The guest agent, in its namespaces ------------------------------------
#
# Who runs it: as root we drop to nobody first (setpriv), so that the agent
# is unprivileged outside; as anyone else it simply stays that user. Then
# `unshare --map-root-user` maps that one uid to 0 in a new user namespace:
# inside, the agent is root (it may set the hostname of its own UTS
# namespace, mount its own /proc) and PID 1 of its own PID namespace, as in
# a VM. Outside it holds no privilege at all.
#
# Who may connect: the guest agent checks SO_PEERCRED against --allow-uid
# (root only by default). The kernel translates the peer's uid into the
# agent's user namespace, and that namespace maps only the agent's own uid.
# Started as root, the host agent stays root outside and is therefore seen
# as the overflow uid (/proc/sys/kernel/overflowuid, 65534) — as would be
# any other outside uid but nobody's. We allow that uid and let the file
# system be the gate: the socket lives in a 0700 directory owned by the
# agent's uid, which only that uid and root can enter. (Started as an
# ordinary user, the host agent has the agent's own uid, which is 0 inside
# and accepted anyway.) In a VM there is no such ambiguity: the agent
# listens on vsock and accepts only the host's CID from a port below 1024.
#
# The binary is copied into the temporary directory so that nobody can run
# it even when this checkout lives under a private home directory.
#
# The VM's secret: what the host agent proves itself with in every Hello
# (on a host, it makes one at each VM start and crosvm hands it to the
# guest through fw_cfg). Here it is made once: the host agent's copy where
# it keeps it (RUNTIME_DIR/<vm>.secret), the guest agent's beside its
# socket; each owned by its agent's uid (inside the namespace the agent's
# is 0), mode 0600.
overflow=$(cat /proc/sys/kernel/overflowuid 2>/dev/null || echo 65534)
chmod 0711 "$tmp"
mkdir -m 0700 "$tmp/guest" "$tmp/run"
install -m 0755 "$BIN/qubes-lite-guest-agent" "$tmp/guest/"
(umask 077 && head -c 32 /dev/urandom >"$tmp/run/$VM.secret" &&
    cp "$tmp/run/$VM.secret" "$tmp/guest/secret")
drop=()
if [ "$(id -u)" -eq 0 ]; then
    nobody=$(id -u nobody 2>/dev/null || echo 65534)
    nogroup=$(id -g nobody 2>/dev/null || echo 65534)
    chown "$nobody:$nogroup" "$tmp/guest" "$tmp/guest/secret"
    drop=(setpriv --reuid="$nobody" --regid="$nogroup" --clear-groups --)
fi
guest_sock=$tmp/guest/guest.sock
(
    cd "$tmp/guest"
    # --kill-child: should the unshare parent die, the agent dies with it.
    exec env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        "${drop[@]}" \
        unshare --user --map-root-user --pid --fork --kill-child --mount-proc --uts --ipc -- \
        /bin/sh -c 'hostname "$0" && exec "$@"' "$VM" \
        "$tmp/guest/qubes-lite-guest-agent" --listen "unix:$guest_sock" --allow-uid "$overflow" \
        --secret-file "$tmp/guest/secret"
) >"$tmp/guest-agent.log" 2>&1 &
unshare_pid=$!
pids+=("$unshare_pid")
wait_socket "$guest_sock" "$unshare_pid" guest-agent
# unshare --fork waits for its child and ignores SIGTERM; the child (the
# agent, PID 1 inside) is what we stop. A PID 1 gets from outside only the
# signals it handles, and SIGKILL: cleanup() falls back to that.
guest_pid=$(cat "/proc/$unshare_pid/task/$unshare_pid/children")
guest_pid=${guest_pid%% *}
pids+=("$guest_pid")

# --- The host agent, as on a host ---------------------------------------------
#
# It runs as we do and accepts root and the configured user (SO_PEERCRED of
# vm-run, which runs as we do too: no namespace in between, no ambiguity).
export QUBES_LITE_CONFIG_DIR=$tmp/config QUBES_LITE_RUNTIME_DIR=$tmp/run
mkdir -p "$QUBES_LITE_CONFIG_DIR/vms" "$QUBES_LITE_RUNTIME_DIR"
printf '{"user": "%s"}\n' "$(id -un)" >"$QUBES_LITE_CONFIG_DIR/host.json"
printf '{"id": 3, "name": "%s"}\n' "$VM" >"$QUBES_LITE_CONFIG_DIR/vms/$VM.json"
"$BIN/qubes-lite-host-agent" --vm "$VM" --no-vmm \
    --listen "unix:$QUBES_LITE_RUNTIME_DIR/$VM.sock" --guest "unix:$guest_sock" \
    </dev/null >"$tmp/host-agent.log" 2>&1 &
host_pid=$!
pids+=("$host_pid")
wait_socket "$QUBES_LITE_RUNTIME_DIR/$VM.sock" "$host_pid" host-agent
export PATH=$BIN:$PATH

say "The guest agent is pid $guest_pid, user $(stat -c %U "/proc/$guest_pid") outside and root inside its namespaces; the host agent is pid $host_pid"
show "vm-run $VM uname -a"
vm-run "$VM" uname -a

say "Inside, the agent's user namespace makes the command root; its PID namespace makes the agent PID 1"
show "vm-run $VM id"
vm-run "$VM" id
if command -v ps >/dev/null; then
    show "vm-run $VM ps -o pid,user,comm"
    vm-run "$VM" ps -o pid,user,comm
fi

say "Exit status comes back as the command's own"
show "vm-run $VM sh -c 'exit 3'; echo \$?"
rc=0
vm-run "$VM" sh -c 'exit 3' || rc=$?
echo "$rc"

say "stdin and stdout stream both ways, on a stream connection past the agent"
show "seq 1 100000 | vm-run $VM sort -rn | head -3"
# head leaves after three lines; what that does to the writers is not the point.
seq 1 100000 | vm-run "$VM" sort -rn | head -3 || true

say "With -t the command gets a terminal of its own (script gives us one here)"
show "vm-run -t $VM sh -c 'tty; stty size'"
# script(1) provides the terminal vm-run passes on (24x80). vm-run's stdin
# stays off it: script turns the EOF of its own stdin into an EOF character
# typed on that terminal, which would race into the command's input.
script -qec "stty rows 24 cols 80; vm-run -t $VM sh -c 'tty; stty size' </dev/null" \
    /dev/null </dev/null | tr -d '\r'

say "Signals are forwarded: Ctrl-C (SIGINT) reaches the command, which dies of it"
show "vm-run $VM sleep 30   # SIGINT after half a second"
rc=0
timeout --preserve-status -s INT 0.5 vm-run "$VM" sleep 30 || rc=$?
echo "exit status $rc (128 + SIGINT)"

say "--timing says where the time went (on stderr)"
show "vm-run --timing $VM true"
vm-run --timing "$VM" true 2>&1

if [ -x /usr/bin/python3 ]; then
    say "The guest agent's Status (what vm-list will show), asked while one session runs, with the VM's secret"
    vm-run "$VM" sleep 2 &
    pids+=("$!")
    sleep 0.3
    /usr/bin/python3 - "$guest_sock" "$QUBES_LITE_RUNTIME_DIR/$VM.secret" <<'PY'
# A Status request by hand: the protocol is small enough to speak without a
# protobuf library (Envelope field 1 = Hello, 12 = StatusRequest, 13 = Status).
# Hello {major 1, minor 0, secret (field 4)}: without the VM's secret the
# agent would answer Error(DENIED).
import socket, struct, sys

def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)

def fields(buf):
    i = 0
    while i < len(buf):
        key = shift = 0
        while True:
            b = buf[i]; i += 1; key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                break
        num, wtype = key >> 3, key & 7
        val = shift = 0
        while True:
            b = buf[i]; i += 1; val |= (b & 0x7F) << shift; shift += 7
            if b < 0x80:
                break
        if wtype == 2:
            yield num, buf[i:i + val]; i += val
        else:
            yield num, val

def frame(num, payload):
    body = varint(num << 3 | 2) + varint(len(payload)) + payload
    return struct.pack(">I", len(body)) + body

s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    secret = f.read()
s.sendall(frame(1, b"\x08\x01\x10\x00\x22" + varint(len(secret)) + secret) + frame(12, b""))
f = s.makefile("rb")
while True:
    n = struct.unpack(">I", f.read(4))[0]
    (num, payload), = fields(f.read(n))
    if num == 13:
        st = dict(fields(payload))
        print(f"uptime (of the machine, in a VM the VM's) {st.get(1, 0) / 1000:.1f} s, live sessions {st.get(2, 0)}, "
              f"idle {st.get(3, 0) / 1000:.1f} s, idle timeout {st.get(4, 0)} s (0: not disposable)")
        break
    if num == 11:
        sys.exit(f"error: {dict(fields(payload)).get(2, b'').decode()}")
PY
    wait "$!" 2>/dev/null || true
fi

say "Done; stopping the agents"
