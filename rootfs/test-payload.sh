#!/bin/sh
# The test payload of the guest image (mkimage.py --test-payload; tests
# only): /init runs it once, as a service, right after it started the
# guest agent. It plays the host inside the guest: the real host agent
# (--no-vmm) reaches the guest agent over vsock on CID 1 (vsock_loopback,
# the agent runs with --allow-local-cid) and vm-run goes through it, as on
# a host. It prints on the console, for tests/vm/test_image.py:
#
#   QL-IMAGE agent-answers uptime=S tries=N   the first vm-run that worked
#   QL-IMAGE fact NAME VALUE                  what the guest looks like
#   QL-IMAGE done uptime=S                    the end; the VM is left idle
#
# Facts: hostname and user (what a command run through the agent sees),
# the agent's command line, addresses and routes, whether an orphan is
# adopted and reaped by PID 1, zombies, whether a killed agent comes back,
# and what vm-run says through host agents without the VM's secret or with
# a wrong one.
#
# The host agent proves itself with the VM's secret, which /init copied
# from fw_cfg to /run/qubes-lite/secret; the payload's host agent finds it
# where a host agent keeps it, RUNTIME_DIR/<vm>.secret. A VM booted
# without it prints instead
#
#   QL-IMAGE no-secret
#   QL-IMAGE agent-refuses uptime=S tries=N: MESSAGE   vm-run refused by the agent
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
CONF=/run/ql-test/config
RUN=/run/qubes-lite
mkdir -p $CONF/vms $RUN
echo '{"user": "root"}' >$CONF/host.json
echo '{"id": 3, "name": "image"}' >$CONF/vms/image.json
export QUBES_LITE_CONFIG_DIR=$CONF QUBES_LITE_RUNTIME_DIR=$RUN

up() { cut -d' ' -f1 /proc/uptime; }
fact() { echo "QL-IMAGE fact $1 $2"; }
oneline() { tr '\n\0' '  ' | sed 's/ *$//'; }

# host_agent VM: a host agent for VM (its own socket and log) in the
# background; sets $HA.
host_agent() {
    qubes-lite-host-agent --vm "$1" --no-vmm --foreground --listen "unix:$RUN/$1.sock" \
        --guest vsock:1:5200 >"/run/ql-test/host-agent-$1.log" 2>&1 &
    HA=$!
}

# refused VM TRIES: retries `vm-run VM true` every 20 ms until the guest
# agent refuses it, while the host agent $HA runs; sets $tries and $err.
refused() {
    tries=0
    while [ $tries -lt "$2" ] && kill -0 $HA 2>/dev/null; do
        tries=$((tries + 1))
        err=$(vm-run "$1" true </dev/null 2>&1 >/dev/null)
        case $err in *"guest agent"*"denied access"*) return 0 ;; esac
        sleep 0.02
    done
    return 1
}

if [ ! -e $RUN/secret ]; then
    echo "QL-IMAGE no-secret"
    host_agent image
    refused image 1500
    echo "QL-IMAGE agent-refuses uptime=$(up) tries=$tries: $err"
    echo "QL-IMAGE done uptime=$(up)"
    kill $HA
    wait
    exit 0
fi
(umask 077 && cat $RUN/secret >$RUN/image.secret)
host_agent image

# answers TRIES: retries `vm-run image true` every 20 ms; sets $tries.
answers() {
    tries=0
    while [ $tries -lt "$1" ]; do
        tries=$((tries + 1))
        vm-run image true </dev/null >/dev/null 2>&1 && return 0
        sleep 0.02
    done
    return 1
}
if answers 1500; then
    echo "QL-IMAGE agent-answers uptime=$(up) tries=$tries"
else
    echo "QL-IMAGE agent-silent uptime=$(up) tries=$tries"
    sed 's/^/QL-IMAGE log /' /run/ql-test/host-agent-image.log
fi

# A session kept open meanwhile keeps the VM up whatever the idle timeout
# and however slow this machine is.
vm-run image sleep 600 </dev/null >/dev/null 2>&1 &
HOLD=$!

fact hostname "$(vm-run image hostname </dev/null 2>&1 | oneline)"
fact user "$(vm-run image id -un </dev/null 2>&1 | oneline)"
fact uid "$(vm-run image id -u </dev/null 2>&1 | oneline)"
fact home "$(vm-run image pwd </dev/null 2>&1 | oneline)"
AGENT=$(pidof qubes-lite-guest-agent)
fact agent-cmdline "$(oneline </proc/$AGENT/cmdline)"
fact addresses "$(ip -4 -o addr show | awk '{print $2, $4}' | oneline)"
fact default-route "$(ip -4 route show default | oneline)"
fact resolv-conf "$(oneline </etc/resolv.conf 2>/dev/null)"
fact etc-hostname "$(oneline </etc/hostname)"
fact secret-modes "$(stat -c '%a %U' $RUN/secret $RUN | oneline)"
fact secret-sha256 "$(sha256sum <$RUN/secret | cut -d' ' -f1)"

# An orphan: a command's background child outlives it and is adopted by
# PID 1 (the agent is no subreaper), which must reap it when it exits.
ORPHAN=$(vm-run image sh -c 'sleep 3 >/dev/null 2>&1 & echo $!' </dev/null 2>&1)
fact orphan-ppid "$(awk '/^PPid:/ {print $2}' /proc/$ORPHAN/status 2>/dev/null)"
i=0
while [ -e /proc/$ORPHAN ] && [ "$(cut -d' ' -f3 /proc/$ORPHAN/stat 2>/dev/null)" != Z ] &&
    [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
sleep 1
if [ ! -e /proc/$ORPHAN ]; then
    fact orphan-reaped yes
else
    fact orphan-reaped "no: $(cut -d' ' -f3 /proc/$ORPHAN/stat)"
fi
# Zombies PID 1 leaves: children of 1 that stay zombies for a second.
zombies() { awk '$3 == "Z" && $4 == 1 {print $1}' /proc/[0-9]*/stat 2>/dev/null | sort; }
z1=$(zombies)
sleep 1
fact zombies "$(zombies | grep -cxF "${z1:-none}")"

# Host agents without the VM's secret, and with a wrong one: the guest
# agent refuses what they hand to vm-run (they pass its peer check, as a
# host process with CAP_NET_BIND_SERVICE would).
MAIN_HA=$HA
echo '{"id": 5, "name": "nosecret"}' >$CONF/vms/nosecret.json
echo '{"id": 7, "name": "wrong"}' >$CONF/vms/wrong.json
(umask 077 && head -c 32 /dev/urandom >$RUN/wrong.secret)
for vm in nosecret wrong; do
    host_agent $vm
    if refused $vm 500; then
        fact $vm-refused "yes: $err"
    else
        fact $vm-refused "no: $err"
        sed "s/^/QL-IMAGE log $vm /" /run/ql-test/host-agent-$vm.log
    fi
    kill $HA 2>/dev/null
done
HA=$MAIN_HA

# The agent dies (the held session with it): PID 1 starts it again.
kill -KILL "$AGENT"
if answers 500; then
    fact agent-restarted "yes pid $(pidof qubes-lite-guest-agent) (was $AGENT)"
else
    fact agent-restarted "no"
fi

# Done at once: nothing holds the VM up from here on, and the idle timeout
# may power it off while the host agent is still on its way out.
echo "QL-IMAGE done uptime=$(up)"
kill $HOLD $HA 2>/dev/null
wait
