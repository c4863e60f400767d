#!/bin/sh
# Runs INSIDE the TCG guest as /test.sh (see test_vsock.py): the real guest
# agent, host agent and vm-run talking over real AF_VSOCK on CID 1
# (vsock_loopback). Prints one line per check:
#     QL-CHECK <name> PASS|FAIL|SKIP <detail>
# and, when anything failed, the daemons' logs as QL-LOG lines.
. /etc/ql-checks.sh               # check, firstline, finish; $T, $L

CONF=/tmp/ql-config
RUN=/run/qubes-lite
PORT=5200                         # the guest agent's vsock port
PORT_DENY=5201                    # a guest agent without --allow-local-cid
mkdir -p $CONF/vms $RUN
echo '{"user": "root"}' > $CONF/host.json
echo '{"id": 3, "name": "test"}' > $CONF/vms/test.json
echo '{"id": 5, "name": "strict"}' > $CONF/vms/strict.json
export QUBES_LITE_CONFIG_DIR=$CONF QUBES_LITE_RUNTIME_DIR=$RUN

# vmrun NAME ARGS...: runs vm-run with the timeout, stdout/stderr to
# $L/NAME.out/.err, sets $rc.
vmrun() {
    n=$1; shift
    timeout $T vm-run "$@" >$L/$n.out 2>$L/$n.err </dev/null
    rc=$?
}
# gone PID: the process has exited (reaped, or a zombie not yet reaped).
gone() { [ ! -d /proc/$1 ] || [ "$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null)" = Z ]; }
waitfor() {  # SECONDS PID CMD...: retry CMD every 0.1 s until it succeeds;
             # give up early when process PID has exited
    w=$1 pid=$2; shift 2
    end=$(($(cut -d. -f1 /proc/uptime) + w))
    while [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do
        "$@" >/dev/null 2>&1 && return 0
        gone $pid && return 1
        sleep 0.1
    done
    return 1
}
alive() { gone $1 && echo exited || echo running; }

# --- the path itself: modules, CID, a plain echo over CID 1 --------------
cid=$(vmhelper cid 2>&1)
[ "$cid" = 1 ] && check vsock-local-cid PASS "local CID 1" || check vsock-local-cid FAIL "got '$cid'"
vmhelper echo-server 5100 &
ECHO=$!
got=$(timeout 20 vmhelper echo-client 1 5100 ql-loopback 2>&1)
kill $ECHO 2>/dev/null
[ "$got" = ql-loopback ] && check vsock-loopback PASS "echo over CID 1" \
    || check vsock-loopback FAIL "got '$got'"

# --- the daemons ---------------------------------------------------------
# Both guest agents ask no VM secret (--no-secret): what is checked here is
# the peer check on vsock; the secret is test_image.py's and
# test_vsock_device_guest.py's.
qubes-lite-guest-agent --listen vsock::$PORT --allow-local-cid --no-secret \
    >$L/guest-agent.log 2>&1 &
GA=$!
if waitfor 30 $GA sh -c "vmhelper probe 1 $PORT -p reserved -t 5 | grep -q '^PROBE pong'"; then
    check guest-agent-ping PASS "Ping/Pong from a reserved port as root"
else
    check guest-agent-ping FAIL "$(vmhelper probe 1 $PORT -p reserved -t 5 2>&1); guest agent $(alive $GA)"
fi
qubes-lite-host-agent --vm test --no-vmm --foreground --listen unix:$RUN/test.sock \
    --guest vsock:1:$PORT >$L/host-agent.log 2>&1 &
HA=$!
if waitfor 30 $HA test -S $RUN/test.sock; then
    check host-agent-listening PASS "$RUN/test.sock"
else
    check host-agent-listening FAIL "no $RUN/test.sock; host agent $(alive $HA)"
fi

# --- vm-run through the host agent to the guest agent --------------------
vmrun echo test echo hello from the guest
out=$(cat $L/echo.out)
[ $rc = 0 ] && [ "$out" = "hello from the guest" ] && check echo PASS "stdout '$out'" \
    || check echo FAIL "rc=$rc stdout '$out' stderr '$(firstline $L/echo.err)'"

vmrun exit test sh -c 'exit 7'
[ $rc = 7 ] && check exit-code PASS "exit 7 -> 7" \
    || check exit-code FAIL "rc=$rc stderr '$(firstline $L/exit.err)'"

vmrun missing test no-such-program-ql
[ $rc = 127 ] && [ -s $L/missing.err ] && check missing-program PASS "127, stderr '$(firstline $L/missing.err)'" \
    || check missing-program FAIL "rc=$rc stderr '$(firstline $L/missing.err)'"

vmrun streams test sh -c 'echo to-stderr >&2; echo to-stdout'
[ $rc = 0 ] && [ "$(cat $L/streams.out)" = to-stdout ] && [ "$(cat $L/streams.err)" = to-stderr ] \
    && check stderr PASS "stdout and stderr kept apart" \
    || check stderr FAIL "rc=$rc stdout '$(firstline $L/streams.out)' stderr '$(firstline $L/streams.err)'"

MIB=${QL_STDIN_MIB:-4}
head -c $((MIB * 1048576)) /dev/urandom > /tmp/stdin.bin
want=$(sha256sum < /tmp/stdin.bin | cut -d' ' -f1)
t0=$(up)
timeout $T vm-run test cat </tmp/stdin.bin >/tmp/stdout.bin 2>$L/cat.err
rc=$?
t1=$(up)
got=$(sha256sum < /tmp/stdout.bin | cut -d' ' -f1)
secs=$(echo "$t1 $t0" | awk '{ printf "%.2f", $1 - $2 }')
[ $rc = 0 ] && [ "$got" = "$want" ] \
    && check stdin-checksum PASS "$MIB MiB through cat, sha256 ${want%${want#????????????}}…, ${secs}s" \
    || check stdin-checksum FAIL "rc=$rc $(wc -c </tmp/stdout.bin) bytes back, sha256 $got want $want, stderr '$(firstline $L/cat.err)'"
rm -f /tmp/stdin.bin /tmp/stdout.bin

# Without -t the command's stdin and stdout are the stream connection, an
# AF_VSOCK socket here; pipes on both sides of vm-run (its splice path).
vmrun stream-fd test stat -L -c %F /proc/self/fd/0 /proc/self/fd/1
[ $rc = 0 ] && [ "$(cat $L/stream-fd.out | tr '\n' ' ')" = "socket socket " ] \
    && check stream-socket PASS "the command's fds 0 and 1 are a socket" \
    || check stream-socket FAIL "rc=$rc '$(firstline $L/stream-fd.out)' stderr '$(firstline $L/stream-fd.err)'"
head -c $((MIB * 1048576)) /dev/urandom > /tmp/pipe.bin
want=$(sha256sum < /tmp/pipe.bin | cut -d' ' -f1)
got=$(cat /tmp/pipe.bin | timeout $T vm-run test cat 2>$L/pipe.err | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] \
    && check stream-pipes PASS "$MIB MiB pipe to pipe through cat intact" \
    || check stream-pipes FAIL "sha256 $got want $want, stderr '$(firstline $L/pipe.err)'"
rm -f /tmp/pipe.bin

vmrun signal test sh -c 'kill -TERM $$'
[ $rc = 143 ] && check signal PASS "SIGTERM -> 143" \
    || check signal FAIL "rc=$rc stderr '$(firstline $L/signal.err)'"

vmrun user -u nobody test id -un
[ $rc = 0 ] && [ "$(cat $L/user.out)" = nobody ] && check run-as-user PASS "-u nobody: $(cat $L/user.out)" \
    || check run-as-user FAIL "rc=$rc stdout '$(firstline $L/user.out)' stderr '$(firstline $L/user.err)'"

# A terminal: vm-run -t needs one on its own side, vmhelper pty gives it one.
if command -v vmhelper >/dev/null; then
    timeout $T vmhelper pty vm-run -t test tty >$L/pty.out 2>&1 </dev/null
    rc=$?
    out=$(tr -d '\r' < $L/pty.out)
    case "$out" in
    /dev/pts/*) [ $rc = 0 ] && check pty PASS "tty in the guest: $out" \
                    || check pty FAIL "rc=$rc output '$out'" ;;
    *) check pty FAIL "rc=$rc output '$(firstline $L/pty.out)'" ;;
    esac
else
    check pty SKIP "no pty tool in the guest"
fi

# Output the other way: a file the guest program reads, through vm-run's stdout.
head -c $((MIB * 2 * 1048576)) /dev/urandom > /tmp/bulk.bin
want=$(sha256sum < /tmp/bulk.bin | cut -d' ' -f1)
t0=$(up)
timeout $T vm-run test cat /tmp/bulk.bin >/tmp/bulk.out 2>$L/bulk.err </dev/null
rc=$?
secs=$(echo "$(up) $t0" | awk '{ printf "%.2f", $1 - $2 }')
got=$(sha256sum < /tmp/bulk.out | cut -d' ' -f1)
[ $rc = 0 ] && [ "$got" = "$want" ] \
    && check stdout-bulk PASS "$((MIB * 2)) MiB of stdout intact, ${secs}s" \
    || check stdout-bulk FAIL "rc=$rc $(wc -c </tmp/bulk.out) bytes, stderr '$(firstline $L/bulk.err)'"
rm -f /tmp/bulk.bin /tmp/bulk.out

# running ARGS: a process whose whole command line is ARGS exists (not
# merely vm-run, whose own command line holds ARGS too).
running() { ps -o args | grep -qx "$1"; }

# Ctrl-C: SIGINT to vm-run reaches the program, which says so and exits 42.
# (vmhelper sigdfl undoes the SIGINT ignore a shell gives `&` jobs, then
# execs vm-run, so $! is vm-run.)
vmhelper sigdfl vm-run test sh -c 'trap "echo got-INT; exit 42" INT; sleep 1001' \
    >$L/sigint.out 2>$L/sigint.err </dev/null &
VR=$!
if waitfor 20 $VR running 'sleep 1001'; then
    kill -INT $VR
    waitfor $T $$ gone $VR || kill -KILL $VR
    wait $VR
    rc=$?
    [ $rc = 42 ] && grep -q got-INT $L/sigint.out \
        && check signal-forward PASS "SIGINT forwarded, the program's trap ran, exit 42" \
        || check signal-forward FAIL "rc=$rc stdout '$(firstline $L/sigint.out)' stderr '$(firstline $L/sigint.err)'"
else
    kill -KILL $VR 2>/dev/null; wait $VR
    check signal-forward FAIL "the program never started: stderr '$(firstline $L/sigint.err)'"
fi

# A client that vanishes ends its session: the program is gone soon after.
vm-run test sleep 1002 >/dev/null 2>$L/hangup.err </dev/null &
VR=$!
if waitfor 20 $VR running 'sleep 1002'; then
    kill -KILL $VR; wait $VR 2>/dev/null
    t0=$(up)
    if waitfor 20 $GA sh -c "! ps -o args | grep -qx 'sleep 1002'"; then
        check disconnect-cleanup PASS "program gone $(echo "$(up) $t0" | awk '{ printf "%.2f", $1 - $2 }')s after vm-run was killed"
    else
        check disconnect-cleanup FAIL "'sleep 1002' still running 20 s after vm-run was killed"
    fi
else
    kill $VR 2>/dev/null; wait $VR
    check disconnect-cleanup FAIL "the program never started: stderr '$(firstline $L/hangup.err)'"
fi

# --- who may connect -----------------------------------------------------
p=$(timeout 20 vmhelper probe 1 $PORT -u 65534 -p 40000 -t 10 2>&1)
case "$p" in
"PROBE denied"*) check denied-unreserved-port PASS "uid 65534 from port 40000: $p" ;;
*) check denied-unreserved-port FAIL "uid 65534 from port 40000: $p" ;;
esac

qubes-lite-guest-agent --listen vsock::$PORT_DENY --no-secret >$L/guest-agent-strict.log 2>&1 &
GA2=$!
qubes-lite-host-agent --vm strict --no-vmm --foreground --listen unix:$RUN/strict.sock \
    --guest vsock:1:$PORT_DENY >$L/host-agent-strict.log 2>&1 &
HA2=$!
if ! waitfor 30 $HA2 test -S $RUN/strict.sock; then
    echo "strict host agent not listening: $(alive $HA2)" >$L/strict-setup.err
fi
# The strict agent must be listening before the probe means anything: a
# connect with nobody listening fails (ECONNRESET), a refused peer is DENIED.
waitfor 30 $GA2 sh -c "! vmhelper probe 1 $PORT_DENY -p reserved -t 10 | grep -q '^PROBE connect-failed'"
p=$(timeout 20 vmhelper probe 1 $PORT_DENY -p reserved -t 10 2>&1)
case "$p" in
"PROBE denied"*) check denied-local-cid-probe PASS "root from a reserved port, no --allow-local-cid: $p" ;;
*) check denied-local-cid-probe FAIL "root from a reserved port, no --allow-local-cid: $p; strict guest agent $(alive $GA2)" ;;
esac
# vm-run's message must carry the refusal, not some other failure.
vmrun denied strict echo should-not-run
if [ $rc = 255 ] && grep -qi denied $L/denied.err && ! grep -q should-not-run $L/denied.out \
    && ! grep -q 'cannot reach' $L/denied.err; then
    check denied-local-cid PASS "vm-run 255: $(firstline $L/denied.err)"
else
    check denied-local-cid FAIL "rc=$rc stdout '$(firstline $L/denied.out)' stderr '$(firstline $L/denied.err)'"
fi

# The refusals did not hurt the agents.
vmrun again test echo still serving
[ $rc = 0 ] && [ "$(cat $L/again.out)" = "still serving" ] && ! gone $GA && ! gone $HA \
    && check still-serving PASS "both agents alive and answering" \
    || check still-serving FAIL "rc=$rc stdout '$(firstline $L/again.out)'; guest agent $(alive $GA), host agent $(alive $HA)"

# SIGTERM stops each daemon cleanly (exit 0), which also lets LeakSanitizer
# look at them before the check below.
bad=
for p in $GA $HA $GA2 $HA2; do
    kill -TERM $p 2>/dev/null
done
for n in guest-agent:$GA host-agent:$HA strict-guest-agent:$GA2 strict-host-agent:$HA2; do
    p=${n#*:}
    if waitfor 10 $$ gone $p; then
        wait $p
        r=$?
        [ $r = 0 ] || bad="$bad ${n%:*} exit $r;"
    else
        bad="$bad ${n%:*} still running 10 s after SIGTERM;"
        kill -KILL $p 2>/dev/null
    fi
done
[ -z "$bad" ] && check clean-exit PASS "both guest agents and both host agents exit 0 on SIGTERM" \
    || check clean-exit FAIL "$bad"

# Sanitizer builds: nothing reported by any program.
finish 60
