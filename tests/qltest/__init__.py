"""The tests' helper package: where the programs are, and what a clean log is.

Every test and benchmark imports its helpers from here (tests/pytest.ini puts
tests/ on the path; `make bench` sets PYTHONPATH=tests). One module per thing
a test drives:

    procs      processes: start, wait, stop by pid; /proc (children, pid
               namespaces, status, fds, memory)
    qlwire     the agent protocol from Python, schema compiled by protoc
    guest      qubes-lite-guest-agent in a temporary directory (guest_agent fixture)
    host       the host agent --no-vmm on a guest agent, and vm-run (host_stack, stack)
    vmm        the host agent supervising the crosvm stand-in or qemu (vmm_stack,
               lifecycle_stack)
    switch     vm-switch in a temporary directory, its counters, and a dpdk-testpmd
               port per VM (switch_run)
    testpmd    an interactive dpdk-testpmd driven through its prompt
    vhost      a vhost-user frontend written in Python, guest memory in a memfd
    child      one vm-switch child driven over its control socket
    qemu       qemu TCG guests (the one check of whether qemu can run), their
               initramfs (initramfs.py, on rootfs/mkimage.py's kernel and archive)
    vmcheck    a guest that runs a check script and reports QL-CHECK lines
    vsock      qubes-lite-vsock on a directory's sockets, and a qemu guest with
               it as its vsock device and the real agents on both sides
    weston     a headless weston for the tests that wait for a Wayland display
    nix        the NixOS modules evaluated by nix-instantiate (tests/nix/)
"""
import os
import shutil
import sys
import tempfile

# The repository, and tests/ in it: what PYTHONPATH must hold for a
# script outside pytest to import this package.
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TESTS)
# BUILD (environment, relative to the repository) names the build under test.
# The image builder (rootfs/mkimage.py) is the VM helpers' kernel and
# archive: importable wherever this package is (pytest.ini also puts it on
# the path; `make bench` sets only PYTHONPATH=tests).
if os.path.join(ROOT, "rootfs") not in sys.path:
    sys.path.append(os.path.join(ROOT, "rootfs"))
BUILD_REL = os.environ.get("BUILD", "build")
BUILD = os.path.join(ROOT, BUILD_REL)
BIN = os.path.join(BUILD, "bin")
# The ASan+UBSan build of `make check`.
SANITIZED = "san" in BUILD_REL

SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                   "UndefinedBehaviorSanitizer")


def program(name):
    """Path of a built program; fails clearly when it was not built."""
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} not built (run make)")
    return path


def sanitizer_reports(text):
    """The lines of text that belong to a sanitizer's report."""
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKS)]


def made(make_one):
    """The body of a fixture that makes things on request: yields
    make(*args, **kw) -> make_one(*args, **kw), and at the end stops every
    thing made (each one, then raises the first failure)."""
    things = []

    def make(*args, **kw):
        thing = make_one(*args, **kw)
        things.append(thing)
        return thing

    yield make
    errors = []
    for thing in things:
        try:
            thing.stop()
        except AssertionError as e:
            errors.append(e)
    if errors:
        raise errors[0]


class KeptOnFailure:
    """A module fixture's temporary directory (consoles, daemons' logs):
    removed at finish() when no test failed while it existed and the
    fixture says all went well, else kept and named on stderr."""

    def __init__(self, request, prefix, what, dir=None):
        self.path = tempfile.mkdtemp(prefix=prefix, dir=dir)
        self.what = what
        self.session = request.session
        self.failed_before = request.session.testsfailed

    def finish(self, ok=True):
        if ok and self.session.testsfailed == self.failed_before:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            sys.stderr.write(f"\n{self.what}: logs kept in {self.path}\n")
