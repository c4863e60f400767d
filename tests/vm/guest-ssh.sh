#!/bin/sh
# Runs INSIDE the TCG guest as /test.sh (see test_vsock_ssh.py):
# qubes-lite-vsock-proxy and vm-shell --ssh over real AF_VSOCK on CID 1
# (vsock_loopback). The guest's sshd is started per connection by socat
# listening on vsock port 22 (sshd cannot listen on vsock itself).
# Prints one line per check:
#     QL-CHECK <name> PASS|FAIL|SKIP <detail>
. /etc/ql-checks.sh               # check, firstline, finish; $T, $L

mkdir -p /run/sshd
chmod 755 /run/sshd
export QUBES_LITE_CONFIG_DIR=/etc/qubes-lite QUBES_LITE_VSOCK_CID=1

elapsed() { echo "$(up) $1" | awk '{ printf "%.2f", $1 - $2 }'; }
# listening PORT: something listens on vsock PORT (a connect succeeds).
listening() {
    i=0
    while [ $i -lt 100 ]; do
        qubes-lite-vsock-proxy 1 $1 </dev/null >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# --- the proxy alone -----------------------------------------------------
# Both ways: a few MiB through cat on the far side, checksummed. The proxy
# must half-close at the end of its stdin, or cat would never end.
socat -t 30 VSOCK-LISTEN:5300,reuseaddr,fork EXEC:cat 2>$L/socat-cat.log &
S1=$!
socat -t 30 VSOCK-LISTEN:5301,reuseaddr,fork SYSTEM:'wc -c' 2>$L/socat-wc.log &
S2=$!
socat -t 0.5 VSOCK-LISTEN:5302,reuseaddr,fork SYSTEM:'echo bye' 2>$L/socat-bye.log &
S3=$!
listening 5300 && listening 5301 && listening 5302 || check proxy-setup FAIL "socat not listening"

MIB=${QL_STDIN_MIB:-4}
head -c $((MIB * 1048576)) /dev/urandom > /tmp/in.bin
want=$(sha256sum < /tmp/in.bin | cut -d' ' -f1)
t0=$(up)
timeout $T qubes-lite-vsock-proxy 1 5300 </tmp/in.bin >/tmp/out.bin 2>$L/proxy-cat.err
rc=$?
got=$(sha256sum < /tmp/out.bin | cut -d' ' -f1)
[ $rc = 0 ] && [ "$got" = "$want" ] \
    && check proxy-both-ways PASS "$MIB MiB there and back intact, $(elapsed $t0)s" \
    || check proxy-both-ways FAIL "rc=$rc $(wc -c </tmp/out.bin) bytes back, stderr '$(firstline $L/proxy-cat.err)'"
rm -f /tmp/in.bin /tmp/out.bin

# Half-close: the far side answers only after the end of its input.
got=$(printf hello | timeout $T qubes-lite-vsock-proxy 1 5301 2>$L/proxy-wc.err)
rc=$?
[ $rc = 0 ] && [ "$(echo $got)" = 5 ] \
    && check proxy-half-close PASS "the peer saw EOF and answered '$(echo $got)'" \
    || check proxy-half-close FAIL "rc=$rc got '$got' stderr '$(firstline $L/proxy-wc.err)'"

# The peer closes while our stdin stays open (a FIFO whose writer sleeps):
# the proxy ends anyway.
mkfifo /tmp/hold
sleep 60 >/tmp/hold &
HOLD=$!
t0=$(up)
timeout $T qubes-lite-vsock-proxy 1 5302 </tmp/hold >/tmp/bye.out 2>$L/proxy-bye.err
rc=$?
secs=$(elapsed $t0)
kill $HOLD 2>/dev/null
got=$(cat /tmp/bye.out)
if [ $rc = 0 ] && [ "$got" = bye ] && awk "BEGIN { exit !($secs < 10) }"; then
    check proxy-peer-close PASS "output '$got', exited ${secs}s after connecting, stdin still open"
else
    check proxy-peer-close FAIL "rc=$rc got '$got' after ${secs}s, stderr '$(firstline $L/proxy-bye.err)'"
fi

timeout $T qubes-lite-vsock-proxy 1 5999 </dev/null >/dev/null 2>$L/proxy-refused.err
rc=$?
[ $rc = 1 ] && grep -q 'cannot connect to vsock CID 1 port 5999' $L/proxy-refused.err \
    && check proxy-refused PASS "exit 1: $(firstline $L/proxy-refused.err)" \
    || check proxy-refused FAIL "rc=$rc stderr '$(firstline $L/proxy-refused.err)'"

qubes-lite-vsock-proxy 1 >/dev/null 2>$L/proxy-usage.err
rc1=$?
qubes-lite-vsock-proxy one 22 >/dev/null 2>>$L/proxy-usage.err
rc2=$?
[ $rc1 = 2 ] && [ $rc2 = 2 ] && check proxy-usage PASS "exit 2 for bad command lines" \
    || check proxy-usage FAIL "rc=$rc1,$rc2 stderr '$(firstline $L/proxy-usage.err)'"
kill $S1 $S2 $S3 2>/dev/null

# --- vm-shell --ssh through the proxy to sshd ----------------------------
socat VSOCK-LISTEN:22,reuseaddr,fork \
    EXEC:"/bin/sshd -i -e -f /etc/ssh/sshd_config" 2>$L/sshd.log &
SSHD=$!
listening 22 || check ssh-setup FAIL "socat for sshd not listening"

t0=$(up)
# ssh hands the remote shell one command line, as ssh does.
timeout $T vm-shell --ssh --root test 'echo "hi from $(id -un)"; exit 3' \
    >$L/ssh-root.out 2>$L/ssh-root.err </dev/null
rc=$?
[ $rc = 3 ] && [ "$(cat $L/ssh-root.out)" = "hi from root" ] \
    && check ssh-root-command PASS "output '$(cat $L/ssh-root.out)', exit 3 passed on, $(elapsed $t0)s" \
    || check ssh-root-command FAIL "rc=$rc stdout '$(firstline $L/ssh-root.out)' stderr '$(firstline $L/ssh-root.err)'"

timeout $T vm-shell --ssh test id -un >$L/ssh-user.out 2>$L/ssh-user.err </dev/null
rc=$?
[ $rc = 0 ] && [ "$(cat $L/ssh-user.out)" = nobody ] \
    && check ssh-configured-user PASS "logged in as '$(cat $L/ssh-user.out)' (host.json user)" \
    || check ssh-configured-user FAIL "rc=$rc stdout '$(firstline $L/ssh-user.out)' stderr '$(firstline $L/ssh-user.err)'"

head -c 1048576 /dev/urandom > /tmp/ssh-in.bin
want=$(sha256sum < /tmp/ssh-in.bin | cut -d' ' -f1)
got=$(timeout $T vm-shell --ssh --root test sha256sum </tmp/ssh-in.bin 2>$L/ssh-stdin.err | cut -d' ' -f1)
[ "$got" = "$want" ] && check ssh-stdin PASS "1 MiB of stdin reached the remote command intact" \
    || check ssh-stdin FAIL "got '$got' stderr '$(firstline $L/ssh-stdin.err)'"

sleep 0.5
if ps -o args | grep -v grep | grep -q '^qubes-lite-vsock-proxy\|/qubes-lite-vsock-proxy'; then
    check ssh-no-proxy-left FAIL "$(ps -o pid,args | grep qubes-lite-vsock-proxy | grep -v grep | tr '\n' ' ')"
else
    check ssh-no-proxy-left PASS "no proxy left running after the ssh sessions"
fi

timeout $T vm-shell --ssh nosuch true >/dev/null 2>$L/ssh-unknown.err
rc=$?
[ $rc = 255 ] && [ "$(cat $L/ssh-unknown.err)" = "vm-shell: no VM named 'nosuch' (no /etc/qubes-lite/vms/nosuch.json)" ] \
    && check ssh-unknown-vm PASS "255: $(firstline $L/ssh-unknown.err)" \
    || check ssh-unknown-vm FAIL "rc=$rc stderr '$(firstline $L/ssh-unknown.err)'"
kill $SSHD 2>/dev/null

finish 40
