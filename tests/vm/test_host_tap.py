"""hostNetworking for real: the host agent's TAP code (host/agent/tap.c,
through `host-tap ensure`, the C test's driver mode) makes `vm-tapt` with
the host's end of the VM's /31, owned by an unprivileged user; a qemu TCG
guest running as that user opens it by name (`-netdev tap,ifname=...,
script=no,downscript=no`), sets its own address and its gateway, and
pings the host side, which pings it back; once qemu has exited the TAP
is removed (`host-tap remove`), and only then.

Everything runs in a network namespace of the test's own: `unshare --net
sleep` holds it, each command enters it with nsenter, and killing that
one process (by its pid) takes the namespace and anything left in it
away. Needs root; skipped (with the reason) without it, or when qemu,
busybox-static or the Debian kernel cannot be had. Environment: BUILD
(default build), QL_VM_TIMEOUT (boot timeout, default 120 s).
"""
import json
import os
import shutil
import subprocess

import pytest

from qltest import BUILD, KeptOnFailure, initramfs, qemu

DRIVER = os.path.join(BUILD, "tests", "integration", "host-tap")

# A VM with id 3 on the default network 172.16.200.0/24 (DESIGN.md): the
# VM is <base>.<id>, the host's end of its /31 <base>.<id-1>.
TAP = "vm-tapt"
VM_IP, HOST_IP, PREFIX = "172.16.200.3", "172.16.200.2", 31
MAC = "52:54:00:20:00:03"
USER = 65534                     # the configured user: qemu runs as it


class Lab:
    error = None
    holder = None                # the process holding the namespace
    guest = None
    work = None                  # KeptOnFailure
    made = None                  # what `host-tap ensure` said

    def ns(self, *argv):
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *argv]

    def run(self, *argv, check=True):
        r = subprocess.run(self.ns(*argv), capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r


@pytest.fixture(scope="module")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a TAP in a network namespace of its own")
    if not os.access(DRIVER, os.X_OK):
        pytest.fail(f"not built: {DRIVER} (run make tests)")
    kernel = qemu.guest_kernel_or_skip()
    lab = Lab()
    lab.work = KeptOnFailure(request, "ql-host-tap.", "host TAP")
    workdir = lab.work.path
    lab.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "3600"])
    try:
        # qemu runs as USER: it must reach the kernel, the initramfs and
        # create its control socket here.
        vmlinux = os.path.join(workdir, "vmlinux")
        shutil.copyfile(kernel.vmlinux, vmlinux)
        initrd = qemu.net_image(kernel, os.path.join(workdir, "tap.cpio.gz"))
        for f in (vmlinux, initrd):
            os.chmod(f, 0o644)
        os.chown(workdir, USER, USER)

        lab.made = lab.run(DRIVER, "ensure", TAP, str(USER), str(USER), HOST_IP,
                           str(PREFIX)).stdout.strip()
        # The TAP as the guest's NIC; qemu run as the TAP's owner inside
        # the namespace.
        g = qemu.Guest("tap", vmlinux, initrd, workdir, memory=192, extra=[
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"])
        g.argv = lab.ns("setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                        *g.argv)
        lab.guest = g.start()
        g.wait_ready(float(os.environ.get("QL_VM_TIMEOUT", "120")))
    except (RuntimeError, qemu.GuestError, initramfs.InitramfsError, OSError,
            subprocess.SubprocessError) as e:
        lab.error = f"setting up the TAP and the guest failed: {e}"
    yield lab
    if lab.guest:
        lab.guest.stop()
    lab.holder.kill()                # this namespace's holder only, by its pid
    lab.holder.wait()
    lab.work.finish(ok=lab.error is None)


def ready(lab):
    if lab.error:
        pytest.fail(lab.error + f"\nlogs: {lab.work.path}", pytrace=False)
    return lab.guest


def link(lab):
    """`ip -d -j addr show` of the TAP, as iproute2 sees it."""
    [info] = json.loads(lab.run("ip", "-d", "-j", "addr", "show", "dev", TAP).stdout)
    return info


def test_tap_made_for_the_vm(lab):
    ready(lab)
    assert lab.made == "created"
    info = link(lab)
    data = info["linkinfo"]["info_data"]
    assert (info["linkinfo"]["info_kind"], data["type"]) == ("tun", "tap"), info
    assert data["persist"] and not data["multi_queue"], info
    assert "UP" in info["flags"], info
    inet = [(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["family"] == "inet"]
    assert inet == [(HOST_IP, PREFIX)], info


def test_guest_reaches_host(lab):
    g = ready(lab)
    out = g.check("cat /sys/class/net/eth0/address; "
                  "basename $(readlink /sys/class/net/eth0/device/driver)")
    assert out.split() == [MAC, "virtio_net"], out
    g.check(f"ip addr add {VM_IP}/{PREFIX} dev eth0 && ip link set eth0 up && "
            f"ip route add default via {HOST_IP}")
    rc, out = g.sh(f"ping -c 3 -W 5 {HOST_IP}", timeout=60)
    assert rc == 0 and "3 packets received" in out, out
    # The host's end carries traffic now: the guest holds the TAP, opened
    # by a qemu without privileges (nsenter and setpriv exec it in place).
    assert "LOWER_UP" in link(lab)["flags"]
    with open(f"/proc/{g.proc.pid}/status") as f:
        uids = [l.split()[1:] for l in f if l.startswith(("Uid:", "Gid:"))]
    assert uids == [[str(USER)] * 4] * 2, uids


def test_host_reaches_guest(lab):
    ready(lab)
    busybox = initramfs.static_busybox()
    r = lab.run(busybox, "ping", "-c", "3", "-W", "5", VM_IP, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_removed_once_the_vm_is_gone(lab):
    g = ready(lab)
    # Only after the VMM has exited; the TAP outlives it (persistent).
    assert g.stop() is not None
    assert "NO-CARRIER" in link(lab)["flags"]
    assert lab.run(DRIVER, "remove", TAP).stdout.strip() == "removed"
    r = lab.run("ip", "link", "show", "dev", TAP, check=False)
    assert r.returncode != 0, r.stdout
    assert lab.run(DRIVER, "remove", TAP).stdout.strip() == "left"
