"""The first hour: what a new user runs into first, each mistake answered
with one clear line and the documented exit status (the README's vm-run,
vm-list, --check, systemd and Configuration sections)."""
from qltest.host import VM


# ---- vm-run -w ----------------------------------------------------------------

def test_vm_run_bad_directory_is_126(stack):
    """A directory that does not exist is 126 (could not be started), as
    the README says, not 127 (not found): the command is there."""
    r = stack.vm_run("-w", "/nonexistent", VM, "true")
    assert r.returncode == 126, r
    assert b"/nonexistent" in r.stderr
    r = stack.vm_run("-w", "/etc/passwd", VM, "true")
    assert r.returncode == 126, r


def test_vm_run_missing_program_stays_127(stack):
    r = stack.vm_run("-w", "/", VM, "no-such-program-here")
    assert r.returncode == 127, r
    r = stack.vm_run("-w", "/", VM, "/no/such/program")
    assert r.returncode == 127, r
