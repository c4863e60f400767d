"""A minimal initramfs for the VM tests, assembled with the image
builder's pieces (rootfs/mkimage.py: the kernel, module order, the newc
archive), around a test's own /init.

    cd tests && python3 -m qltest.initramfs OUT.cpio.gz TEST_SCRIPT [BINARY ...]

It holds busybox-static (every applet as a symlink), the requested kernel
modules with their dependencies in load order, the given binaries in /bin
with their shared libraries (so ASan builds bring libasan and libubsan
along), /etc/passwd and /etc/group with root and nobody, and TEST_SCRIPT
as /test.sh. /init mounts proc, sys and devtmpfs, loads the modules, runs
/test.sh and powers off, printing markers:

    QL-VM-BOOT uptime=S        first line of /init
    QL-VM-MODS uptime=S        modules loaded (QL-VM-INSMOD-FAIL <m> before, per failure)
    QL-VM-TEST-EXIT rc=N uptime=S
    QL-VM-DONE                 just before `poweroff -f`
"""
import os
import subprocess
import sys

import mkimage
from qltest import BUILD, TESTS

# What the vsock tests need; the rest (virtio, virtio_ring) comes as deps.
VSOCK_MODULES = ["vsock", "vmw_vsock_virtio_transport_common",
                 "vmw_vsock_virtio_transport", "vsock_loopback"]
# What the switch tests need: a virtio-net NIC on qemu's PCI bus
# (virtio_ring, virtio, failover and the rest come as deps).
NET_MODULES = ["virtio_pci", "virtio_net"]

PASSWD = """root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/sh
"""
GROUP = """root:x:0:
nogroup:x:65534:
"""

InitramfsError = mkimage.ImageError
BusyboxUnavailable = mkimage.BusyboxUnavailable
static_busybox = mkimage.static_busybox

INIT = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
echo "QL-VM-BOOT uptime=$(up)"
for m in $(cat @MODULE_LIST@); do
  insmod /lib/modules/$m || echo "QL-VM-INSMOD-FAIL $m"
done
echo "QL-VM-MODS uptime=$(up)"
ip link set lo up 2>/dev/null
hostname qlvm
cd /
if [ -x /test.sh ]; then
  /test.sh </dev/null
  echo "QL-VM-TEST-EXIT rc=$? uptime=$(up)"
else
  echo "QL-VM-TEST-EXIT rc=none uptime=$(up)"
fi
grep -q ql.shell /proc/cmdline && setsid cttyhack sh
echo "QL-VM-DONE"
sync
poweroff -f
""".replace("@MODULE_LIST@", mkimage.MODULE_LIST)


def vmhelper():
    """tests/vm/vmhelper.c (a static helper for vsock guests: echo, probe,
    pty runner, the CID) built into $BUILD/vm/vmhelper when out of date;
    its path. Runs sharing $BUILD/vm may build it at once: each writes its
    own file and renames it into place."""
    src = os.path.join(TESTS, "vm", "vmhelper.c")
    work = os.path.join(BUILD, "vm")
    out = os.path.join(work, "vmhelper")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    os.makedirs(work, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    tmp = f"{out}.{os.getpid()}.tmp"
    r = subprocess.run([cc, "-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o", tmp, src],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise InitramfsError(f"building {out} with {cc} -static failed:\n{r.stderr}")
    os.replace(tmp, out)
    return out


def build(out, kernel, test_script=None, binaries=(), modules=VSOCK_MODULES,
          files=None):
    """Writes the newc archive (uncompressed) to `out`; returns the module names
    in load order.

    binaries: host paths, installed as /bin/<basename>.
    files: {guest path: host path or bytes} for anything else.
    """
    img = mkimage.Initramfs()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "etc",
              "root", "lib/modules", "var/tmp"):
        img.add_dir(d)
    img.add_dir("/tmp", 0o1777)
    img.add_busybox()
    names = img.add_modules(kernel, modules)
    for b in binaries:
        img.add_program(b, "/bin/" + os.path.basename(b))
    for path, text in (("/etc/passwd", PASSWD), ("/etc/group", GROUP),
                       ("/etc/nsswitch.conf", mkimage.NSSWITCH), ("/etc/shells", "/bin/sh\n")):
        img.add_file(path, data=text)
    for guest, src in (files or {}).items():
        if isinstance(src, bytes):
            img.add_file(guest, data=src)
        else:
            img.add_file(guest, src=src)
    if test_script:
        img.add_file("/test.sh", src=test_script, mode=0o755)
    img.add_file("/init", data=INIT, mode=0o755)
    # Uncompressed: a TCG guest unpacks it faster than it inflates gzip.
    img.write(out, compress="none")
    return names


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        mods = build(sys.argv[1], mkimage.ensure_kernel(), sys.argv[2], sys.argv[3:])
    except InitramfsError as e:
        sys.exit(f"qltest.initramfs: {e}")
    print(f"{sys.argv[1]}: {os.path.getsize(sys.argv[1])} bytes; modules: {' '.join(mods)}")
