#!/bin/sh
# /test.sh of the guests that the host drives command by command (see
# qltest.qemu.Guest): reads lines "ID COMMAND" from the second serial port
# (ttyS1; the kernel console stays on ttyS0), runs each COMMAND with sh,
# and answers on ttyS1 with one "QL-OUT ID <line>" per output line and
# then "QL-RC ID <exit status>". "ID quit" ends the loop, and /init powers
# the guest off.
tty=/dev/ttyS1
stty -F "$tty" raw -echo || { echo "QL-CTL-FAIL stty $tty"; exit 1; }
exec 3<>"$tty"
echo "QL-CTL-READY" >&3
while IFS= read -r line <&3; do
    id=${line%% *}
    cmd=${line#* }
    if [ "$cmd" = quit ]; then
        echo "QL-RC $id 0" >&3
        break
    fi
    sh -c "$cmd" </dev/null >/tmp/ql-ctl.out 2>&1
    rc=$?
    sed "s/^/QL-OUT $id /" /tmp/ql-ctl.out >&3
    echo "QL-RC $id $rc" >&3
done
exec 3>&-
