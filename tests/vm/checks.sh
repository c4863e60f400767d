# Sourced by the check scripts (guest-vsock.sh, guest-ssh.sh) inside the
# guest, where qltest.vmcheck installs it as /etc/ql-checks.sh: what the
# host passes in, and how a check reports.
#     QL-CHECK <name> PASS|FAIL|SKIP <detail>
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
[ -f /etc/ql-test.env ] && . /etc/ql-test.env   # sanitizer options from the host

T=${QL_CMD_TIMEOUT:-30}           # seconds any one command may take
L=/tmp/ql-logs                    # every program's log, looked at by finish
mkdir -p $L

FAILED=0
up() { cut -d' ' -f1 /proc/uptime; }
check() {  # name PASS|FAIL|SKIP detail...
    n=$1 r=$2; shift 2
    echo "QL-CHECK $n $r $* (t=$(up))"
    [ "$r" = FAIL ] && FAILED=1
    return 0
}
firstline() { head -c 300 "$1" | tr '\n\r' '  '; }

# finish LINES: the no-sanitizer-reports check over every log in $L; when
# anything failed, the last LINES lines of each log as QL-LOG lines; exits
# 1 if anything failed.
finish() {
    if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' $L/* >/tmp/san 2>/dev/null; then
        check no-sanitizer-reports FAIL "in $(tr '\n' ' ' < /tmp/san)"
    else
        check no-sanitizer-reports PASS "no ASan/LSan/UBSan report in any log"
    fi
    if [ $FAILED = 1 ]; then
        for f in $L/*; do
            [ -s "$f" ] && tail -n "$1" "$f" | sed "s|^|QL-LOG $(basename $f): |"
        done
    fi
    exit $FAILED
}
