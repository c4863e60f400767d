#!/bin/bash
# make demo: vm-run and friends against real VMs, on this machine.
#
# Two VMs boot the project's image (`make image`: build/rootfs/vmlinux and
# initrd.img) under qemu, TCG where KVM does not work: "work", persistent,
# and "scratch", disposable with a short idle timeout. Each has its own host
# agent, as its systemd unit runs it: one per VM, as root, its command
# socket in the runtime directory (made by the agent itself, --listen,
# where systemd would hand it one), starting qemu (and qemu's vsock device,
# qubes-lite-vsock) on the first request and exiting once the VM is over,
# where systemd's socket would wait for the next.
# The configuration, the runtime directory and the logs live in one
# temporary directory; nothing is installed.
#
# Every step checks what it shows; the exit status is 0 only when each did
# what it should, and a step that did not says so in a line of its own.
#
#   scripts/demo.sh            BUILD (environment) names the build dir,
#                              IMAGE the image's (default: BUILD/rootfs)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

die() { echo "demo: $*" >&2; exit 1; }

BIN=$(cd "$BUILD/bin" 2>/dev/null && pwd) || die "$BUILD/bin missing (run make first)"
for p in qubes-lite-host-agent qubes-lite-vsock vm-run vm-list vm-shell vm-stop; do
    [ -x "$BIN/$p" ] || die "$BIN/$p not built (run make first)"
done
image_dir=${IMAGE:-$BUILD/rootfs}
IMAGE=$(cd "$image_dir" 2>/dev/null && pwd) || die "$image_dir missing (run make image first)"
for f in vmlinux initrd.img; do
    [ -f "$IMAGE/$f" ] || die "$IMAGE/$f missing (run make image first)"
done
QEMU=${QUBES_LITE_QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null ||
    die "$QEMU not found: the demo boots real VMs (apt-get install qemu-system-x86)"
# TCG is what runs a VM where KVM does not; a qemu built without it (and
# no KVM) cannot run the demo at all.
if [ ! -w /dev/kvm ] && ! "$QEMU" -accel help 2>/dev/null | grep -qx tcg; then
    die "$QEMU has no TCG and there is no usable /dev/kvm: it cannot run a VM here"
fi
for t in script timeout; do
    command -v "$t" >/dev/null || die "$t not found (bsdutils, coreutils)"
done

VM=work
DISPOSABLE=scratch
IDLE=2
tmp=$(mktemp -d -t qubes-lite-demo.XXXXXX)
pids=()

cleanup() {
    local pid
    trap - EXIT INT TERM HUP PIPE
    # Only what this script started, by pid, newest first. A host agent
    # stops its VM on SIGTERM and exits once qemu has.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 150); do
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
step=""
failed=()
say() { step=$1; printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
show() { printf '$ %s\n' "$*"; }
# fail REASON: the current step did not do what it should; the demo goes
# on with the next and exits 1 at the end.
fail() {
    printf '%sdemo: step "%s" failed: %s%s\n' "$bold" "$step" "$*" "$plain"
    failed+=("$step")
}
expect() {   # what got expected
    [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"
}
expect_in() {   # what text extended-regex
    grep -qE -- "$3" <<<"$2" || fail "$1: no match for '$3'"
}
vm_list_shows() {   # comment pattern...: vm-list shown, each line pattern checked
    local out pattern
    show "vm-list${1:+   # $1}"
    out=$(vm-list) || fail "vm-list exited $?"
    echo "$out"
    shift
    for pattern in "$@"; do
        expect_in "vm-list" "$out" "$pattern"
    done
}

# --- The configuration --------------------------------------------------------
#
# host.json names the VMM; each VM boots the built image. The configured
# user is whoever runs the demo (root here): the host agent lets root and
# that user in.
export QUBES_LITE_CONFIG_DIR=$tmp/etc QUBES_LITE_RUNTIME_DIR=$tmp/run
export QUBES_LITE_VSOCK=$BIN/qubes-lite-vsock QUBES_LITE_QEMU=$QEMU
export PATH=$BIN:$PATH
mkdir -p "$QUBES_LITE_CONFIG_DIR/vms"
mkdir -m 0755 "$QUBES_LITE_RUNTIME_DIR"
printf '{"user": "%s", "vmm": "qemu"}\n' "$(id -un)" >"$QUBES_LITE_CONFIG_DIR/host.json"
vm_json() {   # name id extra-json
    printf '{"id": %s, "name": "%s", "kernel": "%s", "initramfs": "%s",\n' \
        "$2" "$1" "$IMAGE/vmlinux" "$IMAGE/initrd.img"
    printf ' "memory": 256, "cpus": 1, "gpu": false%s}\n' "$3"
}
vm_json "$VM" 3 "" >"$QUBES_LITE_CONFIG_DIR/vms/$VM.json"
vm_json "$DISPOSABLE" 5 ", \"disposable\": true, \"idleTimeout\": $IDLE" \
    >"$QUBES_LITE_CONFIG_DIR/vms/$DISPOSABLE.json"

# --- One host agent per VM ------------------------------------------------------
declare -A agent
start_agent() {   # vm
    local sock=$QUBES_LITE_RUNTIME_DIR/$1.sock
    qubes-lite-host-agent --vm "$1" --listen "unix:$sock" </dev/null >"$tmp/$1-agent.log" 2>&1 &
    agent[$1]=$!
    pids+=("$!")
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        kill -0 "${agent[$1]}" 2>/dev/null || break
        sleep 0.05
    done
    echo "demo: the host agent of $1 did not listen on $sock:" >&2
    cat "$tmp/$1-agent.log" >&2
    exit 1
}
# wait_gone pid seconds: whether pid ended (it is our child: its status
# is then in $agent_rc).
wait_gone() {
    agent_rc=
    for _ in $(seq $(($2 * 10))); do
        if ! kill -0 "$1" 2>/dev/null; then
            agent_rc=0
            wait "$1" || agent_rc=$?
            return 0
        fi
        sleep 0.1
    done
    return 1
}
start_agent "$VM"
start_agent "$DISPOSABLE"

say "Both VMs are stopped; their host agents (pids ${agent[$VM]} and ${agent[$DISPOSABLE]}) wait for a request"
vm_list_shows "" "^$VM +stopped" "^$DISPOSABLE +stopped"

say "vm-run on a stopped VM starts it first; --timing says where the time went"
show "vm-run --timing $VM uname -a"
rc=0
out=$(vm-run --timing "$VM" uname -a 2>"$tmp/err") || rc=$?
echo "$out"
cat "$tmp/err"
expect "exit status" "$rc" 0
expect_in "uname" "$out" "^Linux "
expect_in "--timing" "$(cat "$tmp/err")" "VM start +[0-9.]+ ms \(VM start took [0-9.]+ ms\)"

say "stdin and stdout pass through"
show "printf 'hello from the host\\n' | vm-run $VM tr a-z A-Z"
rc=0
out=$(printf 'hello from the host\n' | vm-run "$VM" tr a-z A-Z) || rc=$?
echo "$out"
expect "exit status" "$rc" 0
expect "output" "$out" "HELLO FROM THE HOST"

say "The exit status is the command's"
show "vm-run $VM sh -c 'exit 7'; echo \$?"
rc=0
vm-run "$VM" sh -c 'exit 7' || rc=$?
echo "$rc"
expect "exit status" "$rc" 7

say "With -t the command gets a terminal of its own (script gives us one here)"
show "vm-run -t $VM tty"
# vm-run's stdin stays off script's terminal: script turns the end of its
# own stdin into an end-of-file character typed there, which would race
# into the command's input.
rc=0
out=$(script -qec "vm-run -t $VM tty </dev/null" /dev/null </dev/null | tr -d '\r') || rc=$?
echo "$out"
expect "exit status" "$rc" 0
expect_in "tty" "$out" "^/dev/pts/[0-9]+$"

say "Ctrl-C (SIGINT) is forwarded: the command dies of it, and its status says so"
show "vm-run $VM sleep 100   # SIGINT after 2 s; echo \$?"
rc=0
timeout --preserve-status -s INT 2 vm-run "$VM" sleep 100 || rc=$?
echo "$rc"
expect "exit status (128 + SIGINT)" "$rc" 130

say "vm-list: $VM runs, $DISPOSABLE is still stopped"
vm_list_shows "" "^$VM +running" "^$DISPOSABLE +stopped"

say "vm-shell attaches to the serial console and replays its recent output (stdin not a terminal: it leaves at once)"
show "vm-shell $VM </dev/null | grep -aE 'BusyBox|qubes-lite'   # the boot log: the shell, the agent"
rc=0
vm-shell "$VM" </dev/null >"$tmp/console" 2>"$tmp/err" || rc=$?
grep -aE 'BusyBox|qubes-lite' "$tmp/console" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' || true
echo "($(wc -c <"$tmp/console") bytes replayed)"
expect "exit status" "$rc" 0
expect_in "console replay" "$(cat "$tmp/console")" "BusyBox v[0-9.]+"
expect_in "console replay" "$(cat "$tmp/console")" "qubes-lite-guest-agent: Listening on vsock"

say "A disposable VM powers itself off once idle for its idleTimeout ($IDLE s)"
show "vm-run $DISPOSABLE echo 'used once'"
rc=0
out=$(vm-run "$DISPOSABLE" echo 'used once') || rc=$?
echo "$out"
expect "exit status" "$rc" 0
expect "output" "$out" "used once"
vm_list_shows "" "^$DISPOSABLE +(running|stopping|stopped)"
# Its host agent exits once qemu has: the guest powered off by itself.
if wait_gone "${agent[$DISPOSABLE]}" 60; then
    expect "host agent of $DISPOSABLE exit status" "$agent_rc" 0
    grep -q "the guest powered off" "$tmp/$DISPOSABLE-agent.log" ||
        fail "$DISPOSABLE did not power itself off (its host agent stopped it)"
else
    fail "$DISPOSABLE still running a minute after its last command"
fi
vm_list_shows "a few seconds later" "^$DISPOSABLE +stopped"

say "vm-stop shuts $VM down cleanly"
show "vm-stop $VM"
rc=0
vm-stop "$VM" || rc=$?
expect "exit status" "$rc" 0
vm_list_shows "" "^$VM +stopped"
if wait_gone "${agent[$VM]}" 30; then
    expect "host agent of $VM exit status" "$agent_rc" 0
else
    fail "the host agent of $VM did not exit after vm-stop"
fi

if [ ${#failed[@]} -ne 0 ]; then
    printf '\n%sdemo: FAILED: %s%s\n' "$bold" "$(printf '"%s" ' "${failed[@]}")" "$plain"
    for f in "$tmp"/*-agent.log; do
        echo "--- $(basename "$f")" >&2
        tail -20 "$f" >&2
    done
    exit 1
fi
say "Done: every step did what it should"
