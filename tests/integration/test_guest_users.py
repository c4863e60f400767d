"""Guest agent: the users programs run as, with their groups, from the
agent's record of them (users.c), and that record kept current when the
user and group databases change. The agent runs in its own mount namespace
with copies of /etc/passwd and /etc/group bind-mounted over the real ones,
so the test can change them."""
import ctypes
import os
import shutil

import pytest

from qltest.procs import wait_for

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: a mount namespace and switching users")


def private_etc(passwd, group):
    libc = ctypes.CDLL(None, use_errno=True)

    def check(r, what):
        if r != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{what}: {os.strerror(e)}")

    def preexec():
        check(libc.unshare(CLONE_NEWNS), "unshare")
        check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate")
        for src, dst in ((passwd, "/etc/passwd"), (group, "/etc/group")):
            check(libc.mount(src.encode(), dst.encode(), None, MS_BIND, None), f"bind {dst}")
    return preexec


def rewrite(path, text):
    """In place: the bind mount holds on to the inode."""
    with open(path, "r+") as f:
        f.truncate(0)
        f.write(text)


@pytest.fixture
def etc(tmp_path):
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    shutil.copyfile("/etc/passwd", passwd)
    shutil.copyfile("/etc/group", group)
    base_group = group.read_text()
    with open(passwd, "a") as f:
        f.write("qltest:x:4242:4242:ql test:/ql-home:/bin/sh\n")
    group.write_text(base_group + "qltest:x:4242:\nqlextra:x:4243:\n")
    os.chmod(tmp_path, 0o755)
    return passwd, group, base_group


def records_kept(g):
    return g.log_text().count("record kept")


def run_when_kept(g, n, argv, **fields):
    """Runs argv once the agent has kept its n-th record (the lookup runs
    in the background after an Exec that found no current record)."""
    wait_for(lambda: records_kept(g) >= n, timeout=30, what=f"record {n}")
    return g.run(argv, **fields)


def test_groups_from_the_record_follow_the_files(guest_agent, etc):
    passwd, group, base_group = etc
    g = guest_agent(preexec=private_etc(str(passwd), str(group)))
    # No record yet: the child looks the user up itself.
    out, err, ex, _ = g.run(["id", "-G"], user="qltest")
    assert out == b"4242\n", err
    # From the record now.
    out, err, ex, _ = run_when_kept(g, 1, ["id", "-G"], user="qltest")
    assert out == b"4242\n", err
    out, err, ex, _ = g.run(["sh", "-c", 'echo "$HOME $SHELL $USER $LOGNAME"; id -u'],
                            user="qltest")
    assert out == b"/ql-home /bin/sh qltest qltest\n4242\n", err

    # A new membership counts from the next Exec on, record or not.
    rewrite(group, base_group + "qltest:x:4242:\nqlextra:x:4243:qltest\n")
    out, err, ex, _ = g.run(["id", "-G"], user="qltest")
    assert out == b"4242 4243\n", err
    out, err, ex, _ = run_when_kept(g, 2, ["id", "-G"], user="qltest")
    assert out == b"4242 4243\n", err

    # And so does a removed one, and a changed home.
    rewrite(group, base_group + "qltest:x:4242:\nqlextra:x:4243:\n")
    out, err, ex, _ = g.run(["id", "-G"], user="qltest")
    assert out == b"4242\n", err
    text = passwd.read_text().replace(":/ql-home:", ":/ql-home2:")
    rewrite(passwd, text)
    out, err, ex, _ = g.run(["sh", "-c", 'echo "$HOME"'], user="qltest")
    assert out == b"/ql-home2\n", err
    out, err, ex, _ = run_when_kept(g, 3, ["sh", "-c", 'echo "$HOME"; id -G'], user="qltest")
    assert out == b"/ql-home2\n4242\n", err


def test_removed_user_is_refused(guest_agent, etc):
    passwd, group, base_group = etc
    g = guest_agent(preexec=private_etc(str(passwd), str(group)))
    out, err, ex, _ = g.run(["id", "-u"], user="4242")
    assert out == b"4242\n", err
    out, err, ex, _ = run_when_kept(g, 1, ["id", "-u"], user="4242")
    assert out == b"4242\n", err
    rewrite(passwd, passwd.read_text().replace("qltest:x:4242:4242:ql test:/ql-home:/bin/sh\n", ""))
    out, err, ex, _ = g.run(["id", "-u"], user="4242")
    assert ex.WhichOneof("result") == "start_errno", out
    assert b"4242: no such user" in err


def test_own_user_groups(guest_agent, etc):
    """A root agent's own user (started sharing the agent's memory once the
    record is there) gets root's groups from the files, not the agent's."""
    passwd, group, base_group = etc
    rewrite(group, base_group + "qlroot:x:4244:root\n")
    want = {0, 4244} | {int(f[2]) for f in (line.split(":") for line in base_group.splitlines())
                        if len(f) == 4 and "root" in f[3].split(",")}
    g = guest_agent(preexec=private_etc(str(passwd), str(group)))
    out, err, ex, _ = g.run(["id", "-G"])
    assert out.split()[0] == b"0" and {int(x) for x in out.split()} == want, err
    out, err, ex, _ = run_when_kept(g, 1, ["id", "-G"])
    assert out.split()[0] == b"0" and {int(x) for x in out.split()} == want, err
