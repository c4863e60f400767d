"""A qemu guest that runs a check script, for the VM test modules: the
programs under test (and whatever else the script needs) in its
initramfs, the script as /test.sh printing one
`QL-CHECK <name> PASS|FAIL|SKIP <detail>` line per check (what the scripts
share is tests/vm/checks.sh, installed as /etc/ql-checks.sh), the console
read once the guest has powered off; then one test per check.

    run = CheckRun("vsock-test", ["qubes-lite-guest-agent", ...])
    if not run.error:
        run.boot(qemu.guest_kernel_or_skip(), script, binaries=[...], files={...})
    run.verdict("echo")            in a test: pass, fail or skip as the guest said

The guest gets the sanitizers' settings, QL_CMD_TIMEOUT and QL_STDIN_MIB
(in /etc/ql-test.env); QL_VM_TIMEOUT bounds its whole run (180 s).
"""
import os
import re
import shlex
import sys
import time

import pytest

from qltest import BIN, BUILD, TESTS, initramfs, qemu

WORK = os.path.join(BUILD, "vm")
# What every check script sources: check(), finish() and the like.
CHECKS_SH = os.path.join(TESTS, "vm", "checks.sh")
CHECK_RE = re.compile(r"^QL-CHECK (\S+) (PASS|FAIL|SKIP) ?(.*)$")
GUEST_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "QL_CMD_TIMEOUT", "QL_STDIN_MIB")


class CheckRun:
    """name: the console log is $BUILD/vm/<name>.console.log; programs: the
    ones under test, from $BUILD/bin (error set when one is not built)."""

    def __init__(self, name, programs):
        self.name = name
        self.programs = [os.path.join(BIN, p) for p in programs]
        self.error = None        # set: every check fails with this
        self.result = None       # qemu.Result
        self.checks = {}         # name -> (PASS|FAIL|SKIP, detail)
        self.log = None
        self.logs_shown = False
        missing = [p for p in self.programs if not os.access(p, os.X_OK)]
        if missing:
            self.error = f"not built: {', '.join(missing)} (run make)"

    def boot(self, kern, script, binaries=(), files=None):
        """Builds the image (the programs under test and binaries in /bin,
        files as initramfs.build takes them), boots it and reads the checks."""
        t0 = time.monotonic()
        env = "".join(f"export {k}={shlex.quote(os.environ[k])}\n"
                      for k in GUEST_ENV if os.environ.get(k))
        initrd = os.path.join(WORK, f"{self.name}.{os.getpid()}.cpio.gz")
        try:
            initramfs.build(initrd, kern, script, [*binaries, *self.programs],
                            files={"/etc/ql-test.env": env.encode(),
                                   "/etc/ql-checks.sh": CHECKS_SH, **(files or {})})
        except (RuntimeError, initramfs.InitramfsError) as e:
            self.error = f"building the guest image failed: {e}"
            return
        build_s = time.monotonic() - t0
        self.log = os.path.join(WORK, f"{self.name}.console.log")
        try:
            self.result = qemu.run(kern.vmlinux, initrd,
                                   timeout=float(os.environ.get("QL_VM_TIMEOUT", "180")),
                                   log=self.log)
        finally:
            os.unlink(initrd)
        for line in self.result.lines():
            m = CHECK_RE.match(line.strip())
            if m:
                self.checks[m.group(1)] = (m.group(2), m.group(3))
        sys.stderr.write(f"vm: image built in {build_s:.1f}s, guest ran "
                         f"{self.result.wall:.1f}s, console in {self.log}\n")

    def require(self):
        """Fails the test when the guest could not run at all."""
        if self.error:
            pytest.fail(self.error, pytrace=False)

    def fail_context(self):
        """Where to look; the daemons' logs (or the console's end) only once."""
        r = self.result
        state = "timed out (qemu killed)" if r.timed_out else f"qemu exited {r.returncode}"
        text = f"guest {state} after {r.wall:.1f}s; console: {self.log}"
        if not self.logs_shown:
            self.logs_shown = True
            logs = [line for line in r.lines() if line.startswith("QL-LOG ")]
            text += "\n" + ("\n".join(logs[-120:]) if logs else
                            "last console lines:\n" + "\n".join(r.output.splitlines()[-40:]))
        return text

    def insmod_failures(self):
        return [line for line in self.result.lines() if line.startswith("QL-VM-INSMOD-FAIL")]

    def verdict(self, name):
        """The test of check name: what the guest said of it."""
        self.require()
        if name not in self.checks:
            pytest.fail(f"check {name} did not report\n{self.fail_context()}", pytrace=False)
        verdict, detail = self.checks[name]
        if verdict == "SKIP":
            pytest.skip(f"{name}: {detail}")
        if verdict != "PASS":
            pytest.fail(f"{name}: {detail}\n{self.fail_context()}", pytrace=False)

    def only(self, expected):
        """Every check the guest script ran is one of expected (a set-up
        failure reports itself as an unknown check)."""
        self.require()
        unknown = set(self.checks) - set(expected)
        assert not unknown, {k: self.checks[k] for k in unknown}
