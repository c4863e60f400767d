"""The guest kernel for the VM tests: Debian's own, booted as a PVH vmlinux.

    cd tests && python3 -m qltest.kernel    fetch (once) and print what is cached

ensure_kernel() fetches the kernel package that linux-image-amd64 depends
on with `apt-get download` into $BUILD/vm/debs/ (BUILD defaults to
`build`), unpacks it with `dpkg -x` into $BUILD/vm/kernel/, generates
modules.dep (kmod's depmod, else `busybox depmod`) and extracts the
uncompressed ELF vmlinux from the XZ-compressed bzImage, which qemu boots
through its PVH entry point without the seconds of XZ decompression a
bzImage costs under TCG. Everything is cached: a second call does no work
and needs no network. Raises KernelUnavailable with a one-line reason when
apt or the network cannot provide the package.
"""
import fcntl
import glob
import lzma
import os
import shutil
import subprocess
import sys

from qltest import BUILD, ROOT

META_PACKAGE = "linux-image-amd64"


class KernelUnavailable(Exception):
    """The kernel cannot be had (no apt, no network, no such package)."""


class Kernel:
    def __init__(self, root, version, vmlinux):
        self.root = root                     # the dpkg -x tree
        self.version = version               # e.g. 6.1.0-56-amd64
        self.vmlinux = vmlinux               # uncompressed ELF, PVH-bootable
        self.moddir = os.path.join(root, "lib", "modules", version)

    def __repr__(self):
        return f"Kernel({self.version}, {self.vmlinux})"


def cache_dir():
    """$QL_VM_CACHE, else $BUILD/vm (BUILD relative to the repository)."""
    if os.environ.get("QL_VM_CACHE"):
        return os.path.abspath(os.environ["QL_VM_CACHE"])
    return os.path.join(BUILD, "vm")


def _default_cache():
    """build/vm: where a plain `make test` keeps the kernel. Other BUILD
    directories (build/san for `make check`) reuse it when it is ready
    rather than fetching and unpacking the same 400 MB again."""
    return os.path.join(ROOT, "build", "vm")


def _run(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise KernelUnavailable(f"{cmd[0]} not found (is this Debian?)")


def kernel_package():
    """Name of the package linux-image-amd64 depends on."""
    r = _run(["apt-cache", "depends", META_PACKAGE])
    if r.returncode == 0:
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("Depends:") and "linux-image-" in line:
                return line.split()[1]
    raise KernelUnavailable(
        f"apt-cache knows no {META_PACKAGE} (run apt-get update?): "
        + (r.stderr.strip().splitlines() or ["no Depends line"])[-1])


def _find_deb(dirs, pkg):
    for d in dirs:
        hits = sorted(glob.glob(os.path.join(d, f"{pkg}_*_amd64.deb")))
        if hits:
            return hits[-1]
    return None


def fetch_deb(debdir, pkg, more_dirs=()):
    """The package's .deb: from our caches, apt's cache, or apt-get download."""
    os.makedirs(debdir, exist_ok=True)
    deb = _find_deb([debdir, *more_dirs, "/var/cache/apt/archives"], pkg)
    if deb:
        return deb
    # No glob: an exact name fetches only the candidate version (a glob
    # would fetch every matching version, the -dbg packages included).
    r = _run(["apt-get", "download", pkg], cwd=debdir)
    deb = _find_deb([debdir], pkg)
    if r.returncode != 0 or not deb:
        err = [l for l in r.stderr.splitlines() if l.startswith("E:")] or \
            r.stderr.strip().splitlines() or ["(no message)"]
        raise KernelUnavailable(f"apt-get download {pkg} failed "
                                f"(network or mirror unavailable?): {err[-1]}")
    return deb


def depmod(root, version):
    moddir = os.path.join(root, "lib", "modules", version)
    dep = os.path.join(moddir, "modules.dep")
    if os.path.exists(dep) and os.path.getsize(dep) > 0:
        return dep
    tool = shutil.which("depmod") or shutil.which("depmod", path="/sbin:/usr/sbin")
    cmd = [tool, "-b", root, version] if tool else ["busybox", "depmod", "-b", root, version]
    r = _run(cmd)
    if r.returncode != 0 or not os.path.exists(dep):
        raise KernelUnavailable(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return dep


def extract_vmlinux(bzimage, out):
    """The ELF inside the bzImage: the XZ stream that decompresses to ELF."""
    data = open(bzimage, "rb").read()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[pos:])
            if elf[:4] == b"\x7fELF":
                tmp = out + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(elf)
                os.replace(tmp, out)
                return out
        except lzma.LZMAError:
            pass
        pos = data.find(magic, pos + 1)
    raise KernelUnavailable(f"no XZ-compressed ELF kernel inside {bzimage}")


def _cached(cache):
    stamp = os.path.join(cache, "kernel.ready")
    if not os.path.exists(stamp):
        return None
    version = open(stamp).read().strip()
    k = Kernel(os.path.join(cache, "kernel"), version, os.path.join(cache, "vmlinux"))
    if os.path.exists(k.vmlinux) and os.path.isdir(k.moddir):
        return k
    return None


def ensure_kernel(cache=None, log=None):
    """The cached kernel, fetching and preparing it on first use."""
    if cache is None:
        cache = cache_dir()
        k = _cached(cache) or (None if os.environ.get("QL_VM_CACHE")
                               else _cached(_default_cache()))
    else:
        k = _cached(cache)
    if k:
        return k
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "kernel.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # one fetch at a time
        return _cached(cache) or _prepare(cache, log or (lambda m: None))


def _prepare(cache, say):
    pkg = kernel_package()
    deb = fetch_deb(os.path.join(cache, "debs"), pkg,
                    [os.path.join(_default_cache(), "debs")])
    say(f"unpacking {os.path.basename(deb)}")
    root = os.path.join(cache, "kernel")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    r = _run(["dpkg", "-x", deb, root])
    if r.returncode != 0:
        raise KernelUnavailable(f"dpkg -x {deb} failed: {r.stderr.strip()}")
    versions = os.listdir(os.path.join(root, "lib", "modules"))
    if len(versions) != 1:
        raise KernelUnavailable(f"expected one kernel in {deb}, found {versions}")
    version = versions[0]
    say("generating modules.dep")
    depmod(root, version)
    say("extracting vmlinux")
    extract_vmlinux(os.path.join(root, "boot", f"vmlinuz-{version}"),
                    os.path.join(cache, "vmlinux"))
    with open(os.path.join(cache, "kernel.ready.tmp"), "w") as f:
        f.write(version + "\n")
    os.replace(os.path.join(cache, "kernel.ready.tmp"), os.path.join(cache, "kernel.ready"))
    return _cached(cache)


if __name__ == "__main__":
    try:
        k = ensure_kernel(log=lambda m: print(m, file=sys.stderr))
    except KernelUnavailable as e:
        sys.exit(f"qltest.kernel: {e}")
    print(f"version {k.version}\nvmlinux {k.vmlinux}\nmodules {k.moddir}")
