"""A minimal initramfs for the VM tests.

    cd tests && python3 -m qltest.initramfs OUT.cpio.gz TEST_SCRIPT [BINARY ...]

It holds busybox-static (every applet as a symlink), the requested kernel
modules with their dependencies in load order, the given binaries in /bin
with the shared libraries `ldd` names for them (so ASan builds bring
libasan and libubsan along), /etc/passwd and /etc/group with root and
nobody, and TEST_SCRIPT as /test.sh. /init mounts proc, sys and devtmpfs,
loads the modules, runs /test.sh and powers off, printing markers:

    QL-VM-BOOT uptime=S        first line of /init
    QL-VM-MODS uptime=S        modules loaded (QL-VM-INSMOD-FAIL <m> before, per failure)
    QL-VM-TEST-EXIT rc=N uptime=S
    QL-VM-DONE                 just before `poweroff -f`

The archive is written with `busybox cpio -o -H newc` and gzip.
"""
import gzip
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile

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
NSSWITCH = """passwd: files
group: files
shadow: files
hosts: files
"""

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
for m in $(cat /modules.order); do
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
"""


class InitramfsError(Exception):
    pass


def _modname(path):
    n = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if n.endswith(ext):
            n = n[: -len(ext)]
            break
    return n.replace("-", "_")


def module_order(moddir, wanted):
    """Paths (relative to moddir) of `wanted` and their deps, deps first."""
    deps, path = {}, {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            if ":" not in line:
                continue
            mod, rest = line.split(":", 1)
            n = _modname(mod)
            path[n] = mod.strip()
            deps[n] = [_modname(d) for d in rest.split()]
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        builtin = {_modname(l.strip()) for l in open(bpath) if l.strip()}
    order, state = [], {}

    def visit(n, chain):
        n = n.replace("-", "_")
        if state.get(n) == "done":
            return
        if state.get(n) == "busy":
            raise InitramfsError(f"module dependency cycle: {' -> '.join(chain + [n])}")
        if n not in path:
            if n in builtin:
                state[n] = "done"
                return
            raise InitramfsError(f"no module {n} in {moddir}")
        state[n] = "busy"
        for d in deps[n]:
            visit(d, chain + [n])
        state[n] = "done"
        order.append(path[n])

    for m in wanted:
        visit(m, [])
    return order


def shared_libs(binary):
    """Absolute paths of the shared objects `ldd` lists ([] if static)."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if r.returncode != 0:        # "not a dynamic executable"
        return []
    libs = []
    for line in r.stdout.splitlines():
        if "not found" in line:
            raise InitramfsError(f"{binary}: ldd: {line.strip()}")
        for word in line.split():
            if word.startswith("/"):
                libs.append(word)
    return libs


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


class BusyboxUnavailable(InitramfsError):
    pass


def static_busybox():
    """Path of a statically linked busybox, or BusyboxUnavailable."""
    busybox = shutil.which("busybox")
    if not busybox:
        raise BusyboxUnavailable("busybox not found (apt-get install busybox-static)")
    if shared_libs(busybox):
        raise BusyboxUnavailable(f"{busybox} is dynamically linked (apt-get install busybox-static)")
    return busybox


def _copy(src, dst, mode=None):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)         # follows symlinks
    os.chmod(dst, mode if mode is not None else stat.S_IMODE(os.stat(src).st_mode))


def build(out, kernel, test_script=None, binaries=(), modules=VSOCK_MODULES,
          files=None):
    """Writes the gzipped newc archive to `out`; returns the module list.

    binaries: host paths, installed as /bin/<basename>.
    files: {guest path: host path or bytes} for anything else.
    """
    busybox = static_busybox()
    with tempfile.TemporaryDirectory(prefix="qlvm-initramfs-") as r:
        os.chmod(r, 0o755)            # becomes the guest's /, mkdtemp made it 0700
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp",
                  "run", "etc", "root", "lib/modules", "var/tmp"):
            os.makedirs(os.path.join(r, d), exist_ok=True)
        os.chmod(os.path.join(r, "tmp"), 0o1777)
        _copy(busybox, os.path.join(r, "bin/busybox"), 0o755)
        applets = subprocess.run([busybox, "--list"], capture_output=True,
                                 text=True, check=True).stdout.split()
        for a in applets:
            if a != "busybox" and not os.path.exists(os.path.join(r, "bin", a)):
                os.symlink("busybox", os.path.join(r, "bin", a))
        # Modules, deps first; compressed ones are stored decompressed
        # because busybox insmod does not read every compression.
        names = []
        for rel in module_order(kernel.moddir, modules):
            n = _modname(rel) + ".ko"
            src = os.path.join(kernel.moddir, rel)
            dst = os.path.join(r, "lib/modules", n)
            if rel.endswith(".ko.xz"):
                with lzma.open(src) as f, open(dst, "wb") as g:
                    shutil.copyfileobj(f, g)
            elif rel.endswith(".ko.gz"):
                with gzip.open(src) as f, open(dst, "wb") as g:
                    shutil.copyfileobj(f, g)
            elif rel.endswith(".ko"):
                _copy(src, dst, 0o644)
            else:
                raise InitramfsError(f"cannot unpack module {rel}")
            names.append(n)
        with open(os.path.join(r, "modules.order"), "w") as f:
            f.write("".join(n + "\n" for n in names))
        for b in binaries:
            if not os.access(b, os.X_OK):
                raise InitramfsError(f"{b} is not an executable")
            _copy(b, os.path.join(r, "bin", os.path.basename(b)), 0o755)
            for lib in shared_libs(b):
                dst = os.path.join(r, lib.lstrip("/"))
                if not os.path.exists(dst):
                    _copy(lib, dst, 0o755)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP),
                           ("etc/nsswitch.conf", NSSWITCH), ("etc/shells", "/bin/sh\n")):
            with open(os.path.join(r, name), "w") as f:
                f.write(text)
        for guest, src in (files or {}).items():
            dst = os.path.join(r, guest.lstrip("/"))
            if isinstance(src, bytes):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(src)
            else:
                _copy(src, dst)
        if test_script:
            _copy(test_script, os.path.join(r, "test.sh"), 0o755)
        with open(os.path.join(r, "init"), "w") as f:
            f.write(INIT)
        os.chmod(os.path.join(r, "init"), 0o755)
        entries = []
        for dirpath, dirnames, filenames in os.walk(r):
            rel = os.path.relpath(dirpath, r)
            for n in sorted(dirnames) + sorted(filenames):
                entries.append(n if rel == "." else os.path.join(rel, n))
        listing = "".join(e + "\n" for e in ["."] + entries).encode()
        tmp = f"{out}.{os.getpid()}.tmp"
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        cpio = subprocess.run([busybox, "cpio", "-o", "-H", "newc"], cwd=r,
                              input=listing, capture_output=True)
        if cpio.returncode != 0:
            raise InitramfsError(f"busybox cpio failed: {cpio.stderr.decode().strip()}")
        with gzip.open(tmp, "wb", compresslevel=1) as g:
            g.write(cpio.stdout)
        os.replace(tmp, out)
    return names


if __name__ == "__main__":
    from qltest import kernel
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        mods = build(sys.argv[1], kernel.ensure_kernel(), sys.argv[2], sys.argv[3:])
    except (InitramfsError, kernel.KernelUnavailable) as e:
        sys.exit(f"qltest.initramfs: {e}")
    print(f"{sys.argv[1]}: {os.path.getsize(sys.argv[1])} bytes; modules: {' '.join(mods)}")
