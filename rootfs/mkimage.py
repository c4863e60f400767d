#!/usr/bin/python3
"""The guest image: Debian's kernel and an initramfs of our own.

    rootfs/mkimage.py [--bin DIR] [--out DIR] [--cache DIR] [--module NAME]...
                      [--add GUEST=HOST]... [--service HOST]... [--agent-arg ARG]...
                      [--test-payload] [--compress gzip|xz|none] [--quiet]
    rootfs/mkimage.py --kernel [--cache DIR]     fetch (once), print what is cached

writes OUT/vmlinux (the uncompressed ELF kernel, booted through its PVH entry
point: no XZ decompression under TCG) and OUT/initrd.img (busybox, the guest
agent with exactly the shared libraries it links, qubes-lite-init as /init and
the virtio modules in load order). `make image` runs it with OUT=build/rootfs.

The kernel is the package linux-image-amd64 depends on, fetched with
`apt-get download` (unprivileged), unpacked with `dpkg -x` into the cache
(build/kernel, or --cache, or $QL_KERNEL_CACHE) and used from there: a second
build needs no network as long as apt names the same package version.

The same steps are functions for the tests and other tools:

    kernel = ensure_kernel()                    # Kernel: version, vmlinux, moddir
    module_order(kernel, ["virtio_net"])        # module files, dependencies first
    img = Initramfs()
    img.add_busybox()
    img.add_program("/usr/bin/socat", "/usr/bin/socat")   # with its libraries
    img.add_modules(kernel, ["vsock_loopback"])  # /lib/modules/..., /etc/qubes-lite/modules
    img.add_file("/init", data=b"#!/bin/sh\\n...", mode=0o755)
    img.write("out.cpio.gz")
    build_image(out_dir, bin_dir)               # what `make image` does

Every failure is an ImageError (KernelUnavailable, BusyboxUnavailable) with a
one-line reason.
"""
import argparse
import fcntl
import gzip
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
META_PACKAGE = "linux-image-amd64"

# What every VM needs: virtio on PCI (disks, NICs), the vsock transport the
# guest agent listens on, and the ACPI power button with the event device
# /init reads it from (qemu's system_powerdown). Dependencies come along.
IMAGE_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport",
                 "button", "evdev"]
# What /init reads: the modules to load, in order, one path under
# /lib/modules a line; more words for the guest agent, one a line; programs
# to run once after the agent started.
MODULE_LIST = "/etc/qubes-lite/modules"
AGENT_ARGS = "/etc/qubes-lite/guest-agent.args"
SERVICE_DIR = "/etc/qubes-lite/init.d"
AGENT = "/usr/bin/qubes-lite-guest-agent"

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n"
PROFILE = ("export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
           "PS1='\\h:\\w\\$ '\n")


class ImageError(Exception):
    """Why the image cannot be built, in one line."""


class KernelUnavailable(ImageError):
    """The kernel cannot be had (no apt, no network, no such package)."""


class BusyboxUnavailable(ImageError):
    """No statically linked busybox on this machine."""


def _run(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise KernelUnavailable(f"{cmd[0]} not found (the image is built on Debian)") from None


# ---- the kernel ---------------------------------------------------------------

class Kernel:
    def __init__(self, cache, package, version, release):
        self.cache = cache
        self.package = package        # linux-image-6.1.0-57-amd64
        self.version = version        # its Debian version, 6.1.158-1
        self.release = release        # uname -r: 6.1.0-57-amd64
        self.root = os.path.join(cache, "tree")                    # the dpkg -x tree
        self.vmlinux = os.path.join(cache, "vmlinux")              # ELF, PVH-bootable
        self.moddir = os.path.join(self.root, "lib", "modules", release)
        self._index = None

    def __repr__(self):
        return f"Kernel({self.package} {self.version}, {self.vmlinux})"


def default_cache():
    """$QL_KERNEL_CACHE, else build/kernel in the repository: one kernel for
    every build directory (build/san included)."""
    env = os.environ.get("QL_KERNEL_CACHE")
    return os.path.abspath(env) if env else os.path.join(ROOT, "build", "kernel")


def kernel_package():
    """(name, version) of the package linux-image-amd64 depends on, from
    apt's local lists (no network)."""
    r = _run(["apt-cache", "show", "--no-all-versions", META_PACKAGE])
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        # Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
        words = line.replace("(", " ").replace(")", " ").split()
        if words[:1] == ["Depends:"] and words[1].startswith("linux-image-"):
            if words[2:4] and words[2] == "=":
                return words[1], words[3]
            r = _run(["apt-cache", "show", "--no-all-versions", words[1]])
            for l in r.stdout.splitlines():
                if l.startswith("Version:"):
                    return words[1], l.split()[1]
            raise KernelUnavailable(f"apt-cache show {words[1]}: no version")
    last = (r.stderr.strip().splitlines() or ["no Depends line"])[-1]
    raise KernelUnavailable(f"apt-cache knows no {META_PACKAGE} (run apt-get update?): {last}")


def _deb_name(name, version):
    # dpkg writes an epoch's colon as %3a in file names.
    return f"{name}_{version.replace(':', '%3a')}_amd64.deb"


def fetch_deb(name, version, debdir):
    """The package's .deb: from debdir, apt's own cache, or `apt-get download`
    (which needs no privilege) into debdir."""
    os.makedirs(debdir, exist_ok=True)
    fname = _deb_name(name, version)
    for d in (debdir, "/var/cache/apt/archives"):
        if os.path.exists(os.path.join(d, fname)):
            return os.path.join(d, fname)
    # An exact name=version: a glob would fetch every matching package,
    # the -dbg ones included.
    r = _run(["apt-get", "download", f"{name}={version}"], cwd=debdir)
    path = os.path.join(debdir, fname)
    if r.returncode != 0 or not os.path.exists(path):
        err = ([l for l in r.stderr.splitlines() if l.startswith("E:")]
               or r.stderr.strip().splitlines() or ["(no message)"])
        raise KernelUnavailable(f"apt-get download {name}={version} failed "
                                f"(network or mirror unavailable?): {err[-1]}")
    return path


def extract_vmlinux(bzimage, out):
    """Writes the ELF kernel inside the bzImage (its XZ payload) to out."""
    with open(bzimage, "rb") as f:
        data = f.read()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[pos:])
        except lzma.LZMAError:
            elf = b""
        if elf[:4] == b"\x7fELF":
            _write_atomic(out, elf)
            return out
        pos = data.find(magic, pos + 1)
    raise KernelUnavailable(f"no XZ-compressed ELF kernel inside {bzimage}")


def _elf_sections(data):
    """{name: (offset, size)} of a little-endian ELF64 file's sections."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ImageError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)
    heads = []
    for i in range(shnum):
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        heads.append((name, off, size))
    stroff = heads[shstrndx][1]
    out = {}
    for name, off, size in heads:
        end = data.index(b"\0", stroff + name)
        out[data[stroff + name:end].decode()] = (off, size)
    return out


def has_pvh_entry(vmlinux):
    """True when the ELF carries the Xen PVH entry note qemu and crosvm boot."""
    with open(vmlinux, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if ptype != 4:                       # PT_NOTE
            continue
        p, end = off, off + filesz
        while p + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, p)
            name = data[p + 12:p + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:       # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            p += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _read_stamp(cache):
    try:
        with open(os.path.join(cache, "kernel.ready")) as f:
            name, version, release = f.read().split()
    except (OSError, ValueError):
        return None
    k = Kernel(cache, name, version, release)
    return k if os.path.exists(k.vmlinux) and os.path.isdir(k.moddir) else None


def ensure_kernel(cache=None, log=None):
    """The kernel, fetched and unpacked on first use, and again when apt
    names another version (after an apt-get update). Without apt, or when
    the new version cannot be fetched, the cached one is used."""
    say = log or (lambda m: None)
    cache = os.path.abspath(cache or default_cache())
    cached = _read_stamp(cache)
    try:
        want = kernel_package()
    except KernelUnavailable as e:
        if cached:
            return cached
        raise e
    if cached and (cached.package, cached.version) == want:
        return cached
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, "kernel.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # one fetch at a time
        cached = _read_stamp(cache)
        if cached and (cached.package, cached.version) == want:
            return cached
        try:
            return _prepare(cache, *want, say)
        except KernelUnavailable as e:
            if not cached:
                raise
            say(f"keeping {cached.package} {cached.version}: {e}")
            return cached


def _prepare(cache, name, version, say):
    t0 = time.monotonic()
    say(f"fetching {name} {version}")
    deb = fetch_deb(name, version, os.path.join(cache, "debs"))
    say(f"unpacking {os.path.basename(deb)}")
    tree = os.path.join(cache, "tree.new")
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    r = _run(["dpkg", "-x", deb, tree])
    if r.returncode != 0:
        raise KernelUnavailable(f"dpkg -x {deb} failed: {r.stderr.strip()}")
    releases = os.listdir(os.path.join(tree, "lib", "modules"))
    if len(releases) != 1:
        raise KernelUnavailable(f"expected one kernel in {deb}, found {releases}")
    release = releases[0]
    say("extracting vmlinux")
    vmlinux = os.path.join(cache, "vmlinux")
    extract_vmlinux(os.path.join(tree, "boot", f"vmlinuz-{release}"), vmlinux)
    if not has_pvh_entry(vmlinux):
        raise KernelUnavailable(f"{name} has no PVH entry point (CONFIG_PVH)")
    old = os.path.join(cache, "tree")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(tree, old)
    _write_atomic(os.path.join(cache, "kernel.ready"), f"{name} {version} {release}\n".encode())
    for f in os.listdir(os.path.join(cache, "debs")):          # only the current one
        if f != os.path.basename(deb):
            os.unlink(os.path.join(cache, "debs", f))
    say(f"kernel {release} ready in {time.monotonic() - t0:.1f} s")
    return _read_stamp(cache)


# ---- modules ------------------------------------------------------------------

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz")


def module_name(path):
    n = os.path.basename(path)
    for ext in MODULE_SUFFIXES + (".ko.zst",):
        if n.endswith(ext):
            n = n[:-len(ext)]
            break
    return n.replace("-", "_")


def _module_index(kernel):
    """{name: path relative to moddir} of every module file."""
    if kernel._index is None:
        index = {}
        top = os.path.join(kernel.moddir, "kernel")
        for dirpath, _, files in os.walk(top):
            for f in files:
                rel = os.path.relpath(os.path.join(dirpath, f), kernel.moddir)
                index[module_name(f)] = rel
        kernel._index = index
    return kernel._index


def _module_bytes(path):
    if path.endswith(".ko.xz"):
        with lzma.open(path) as f:
            return f.read()
    if path.endswith(".ko.gz"):
        with gzip.open(path) as f:
            return f.read()
    if path.endswith(".ko"):
        with open(path, "rb") as f:
            return f.read()
    raise ImageError(f"cannot unpack module {path}")


def modinfo(data):
    """The .modinfo section of a module's ELF: {key: [values]}."""
    off, size = _elf_sections(data)[".modinfo"]
    info = {}
    for item in data[off:off + size].split(b"\0"):
        if b"=" in item:
            k, v = item.decode("utf-8", "replace").split("=", 1)
            info.setdefault(k, []).append(v)
    return info


def _builtin(kernel):
    try:
        with open(os.path.join(kernel.moddir, "modules.builtin")) as f:
            return {module_name(l.strip()) for l in f if l.strip()}
    except OSError:
        return set()


def module_order(kernel, wanted):
    """Paths (relative to kernel.moddir) of the wanted modules and of what
    they depend on, each after its dependencies: the order to load them in.
    Dependencies come from each module's own `depends=` (the .deb has no
    modules.dep: depmod runs in its postinst); built-in modules are skipped."""
    index, builtin = _module_index(kernel), None
    order, state = [], {}

    def visit(name, chain):
        nonlocal builtin
        name = name.replace("-", "_")
        if state.get(name) == "done":
            return
        if state.get(name) == "busy":
            raise ImageError(f"module dependency cycle: {' -> '.join(chain + [name])}")
        if name not in index:
            builtin = _builtin(kernel) if builtin is None else builtin
            if name in builtin:
                state[name] = "done"
                return
            raise ImageError(f"no module {name} in {kernel.package}")
        state[name] = "busy"
        info = modinfo(_module_bytes(os.path.join(kernel.moddir, index[name])))
        for deps in info.get("depends", []):
            for d in filter(None, deps.split(",")):
                visit(d, chain + [name])
        state[name] = "done"
        order.append(index[name])

    for m in wanted:
        visit(m, [])
    return order


# ---- the initramfs ------------------------------------------------------------

def shared_libs(binary):
    """Absolute paths of the shared objects the dynamic loader maps for
    binary, the loader itself included ([] for a static binary)."""
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if r.returncode != 0:                   # "not a dynamic executable"
        return []
    libs = []
    for line in r.stdout.splitlines():
        if "not found" in line:
            raise ImageError(f"{binary}: ldd: {line.strip()}")
        libs += [w for w in line.split() if w.startswith("/")]
    return libs


def _strip_debug(binary):
    """binary's bytes without debug sections (objcopy, from binutils)."""
    with tempfile.NamedTemporaryFile(prefix="mkimage-") as tmp:
        r = subprocess.run(["objcopy", "--strip-debug", binary, tmp.name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageError(f"objcopy --strip-debug {binary}: {r.stderr.strip()}")
        return tmp.read()


def static_busybox():
    """Path of a statically linked busybox."""
    path = shutil.which("busybox") or "/bin/busybox"
    if not os.access(path, os.X_OK):
        raise BusyboxUnavailable("busybox not found (apt-get install busybox-static)")
    if shared_libs(path):
        raise BusyboxUnavailable(f"{path} is dynamically linked (apt-get install busybox-static)")
    return path


def _guest_path(path):
    # normpath keeps a leading "//".
    return os.path.normpath("/" + path.lstrip("/"))


class Initramfs:
    """A newc cpio archive assembled in memory: every entry owned by root,
    time 0, so the same inputs give the same bytes, and device nodes
    without privilege. Parent directories are made as needed."""

    def __init__(self):
        self.entries = {}          # guest path -> (mode, payload: bytes | host path | None)
        self.add_dir("/")

    def _parents(self, path):
        parent = os.path.dirname(path)
        if path != "/" and parent not in self.entries:
            self._parents(parent)
            self.entries[parent] = (stat.S_IFDIR | 0o755, None)

    def add_dir(self, path, mode=0o755):
        path = _guest_path(path)
        self._parents(path)
        self.entries[path] = (stat.S_IFDIR | mode, None)

    def add_file(self, path, data=None, src=None, mode=None):
        """A file from data (bytes or str) or from the host file src."""
        if (data is None) == (src is None):
            raise ValueError("add_file: data or src")
        if src is not None and not os.path.isfile(src):
            raise ImageError(f"{src}: not a file")
        if mode is None:
            mode = stat.S_IMODE(os.stat(src).st_mode) if src else 0o644
        if isinstance(data, str):
            data = data.encode()
        path = _guest_path(path)
        self._parents(path)
        self.entries[path] = (stat.S_IFREG | mode, data if src is None else os.path.realpath(src))

    def add_symlink(self, path, target):
        path = _guest_path(path)
        self._parents(path)
        self.entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, path, major, minor, mode=0o600):
        path = _guest_path(path)
        self._parents(path)
        self.entries[path] = (stat.S_IFCHR | mode, (major, minor))

    def add_program(self, src, path, mode=0o755, strip=False):
        """An executable and the shared libraries it links, at the paths
        the loader found them on this machine. strip: without its debug
        information (symbols stay, for backtraces)."""
        if not os.access(src, os.X_OK):
            raise ImageError(f"{src}: not an executable")
        if strip:
            self.add_file(path, data=_strip_debug(src), mode=mode)
        else:
            self.add_file(path, src=src, mode=mode)
        for lib in shared_libs(src):
            if _guest_path(lib) not in self.entries:
                self.add_file(lib, src=lib, mode=0o755)

    def add_busybox(self, busybox=None):
        """busybox-static as /bin/busybox and every applet as a symlink to it
        at the path busybox itself gives (bin/sh, sbin/ip, usr/bin/...)."""
        busybox = busybox or static_busybox()
        self.add_file("/bin/busybox", src=busybox, mode=0o755)
        r = subprocess.run([busybox, "--list-full"], capture_output=True, text=True)
        if r.returncode != 0:
            raise BusyboxUnavailable(f"{busybox} --list-full failed")
        for applet in r.stdout.split():
            path = "/" + applet
            if path != "/bin/busybox" and path not in self.entries:
                self.add_symlink(path, os.path.relpath("/bin/busybox", os.path.dirname(path)))

    def add_modules(self, kernel, names):
        """The modules and their dependencies, decompressed, under
        /lib/modules/RELEASE/, and their load order in MODULE_LIST.
        Returns the module names in that order."""
        order = module_order(kernel, names)
        for rel in order:
            data = _module_bytes(os.path.join(kernel.moddir, rel))
            stem = rel[:-len(".xz")] if rel.endswith(".xz") else \
                rel[:-len(".gz")] if rel.endswith(".gz") else rel
            self.add_file(f"/lib/modules/{kernel.release}/{stem}", data=data)
        listing = "".join(f"{kernel.release}/{r.rsplit('.ko', 1)[0]}.ko\n" for r in order)
        self.add_file(MODULE_LIST, data=listing)
        return [module_name(r) for r in order]

    def cpio(self):
        """The archive's bytes (uncompressed newc)."""
        out = []

        def entry(ino, path, mode, data, rdev=(0, 0)):
            name = (path.lstrip("/") or ".").encode() + b"\0"
            fields = (ino, mode, 0, 0, 1 if not stat.S_ISDIR(mode) else 2, 0, len(data),
                      0, 0, rdev[0], rdev[1], len(name), 0)
            out.append(b"070701" + b"".join(b"%08X" % v for v in fields) + name)
            out.append(b"\0" * (-(110 + len(name)) % 4))
            out.append(data)
            out.append(b"\0" * (-len(data) % 4))

        ino = 1
        for path in sorted(self.entries):
            mode, payload = self.entries[path]
            rdev = (0, 0)
            if stat.S_ISCHR(mode):
                rdev, data = payload, b""
            elif isinstance(payload, str):
                with open(payload, "rb") as f:
                    data = f.read()
            else:
                data = payload or b""
            entry(ino, path, mode, data, rdev)
            ino += 1
        entry(0, "TRAILER!!!", 0, b"")
        return b"".join(out)

    def write(self, out, compress="gzip"):
        """Writes the archive (gzip, xz or none) to out; returns its size."""
        raw = self.cpio()
        if compress == "gzip":
            data = gzip.compress(raw, compresslevel=6, mtime=0)
        elif compress == "xz":
            # The kernel's XZ decoder knows CRC32 only.
            data = lzma.compress(raw, check=lzma.CHECK_CRC32)
        elif compress == "none":
            data = raw
        else:
            raise ValueError(f"unknown compression {compress}")
        _write_atomic(out, data)
        return len(data)


def _write_atomic(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- the image ----------------------------------------------------------------

class Image:
    def __init__(self, vmlinux, initrd, kernel, modules, size):
        self.vmlinux = vmlinux
        self.initrd = initrd
        self.kernel = kernel
        self.modules = modules        # names, in load order
        self.size = size              # initrd.img bytes


def _place_vmlinux(kernel, out):
    """out is the cached vmlinux: a hard link when the file systems allow
    (66 MB not copied), else a copy; left alone when already the same."""
    try:
        a, b = os.stat(kernel.vmlinux), os.stat(out)
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return
    except OSError:
        pass
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        os.link(kernel.vmlinux, tmp)
    except OSError:
        shutil.copyfile(kernel.vmlinux, tmp)
    os.replace(tmp, out)


def test_payload(bin_dir):
    """What --test-payload adds: the loopback vsock transport, the host-side
    programs and a service that checks the image from inside (see
    rootfs/test-payload.sh), and --allow-local-cid for the guest agent,
    whose peer is then on CID 1 in the same guest."""
    return dict(
        modules=["vsock_loopback"],
        programs={"/usr/bin/qubes-lite-host-agent": os.path.join(bin_dir, "qubes-lite-host-agent"),
                  "/usr/bin/vm-run": os.path.join(bin_dir, "vm-run")},
        services=[os.path.join(HERE, "test-payload.sh")],
        agent_args=["--allow-local-cid"],
    )


def build_image(out_dir, bin_dir, kernel=None, modules=(), programs=None, files=None,
                services=(), agent_args=(), compress="gzip", log=None):
    """Builds out_dir/vmlinux and out_dir/initrd.img; returns an Image.

    bin_dir: where qubes-lite-guest-agent and qubes-lite-init were built.
    modules: more kernel modules than IMAGE_MODULES. programs: {guest path:
    host path}, with their libraries. files: {guest path: host path or
    bytes}. services: host files installed as SERVICE_DIR/NN-name and run
    once by /init after the guest agent started. agent_args: extra words
    for the guest agent's command line (AGENT_ARGS).
    """
    say = log or (lambda m: None)
    kernel = kernel or ensure_kernel(log=say)
    img = Initramfs()
    for d in ("/dev", "/proc", "/sys", "/run", "/root", "/home", "/var"):
        img.add_dir(d)
    img.add_dir("/root", 0o700)
    img.add_dir("/tmp", 0o1777)
    # The kernel opens /dev/console for /init before anything is mounted.
    img.add_char_device("/dev/console", 5, 1)
    img.add_busybox()
    img.add_program(os.path.join(bin_dir, "qubes-lite-init"), "/init", strip=True)
    img.add_program(os.path.join(bin_dir, "qubes-lite-guest-agent"), AGENT, strip=True)
    for guest, host in (programs or {}).items():
        img.add_program(host, guest, strip=True)
    names = img.add_modules(kernel, IMAGE_MODULES + [m for m in modules
                                                     if m not in IMAGE_MODULES])
    for path, text in (("/etc/passwd", PASSWD), ("/etc/group", GROUP),
                       ("/etc/nsswitch.conf", NSSWITCH), ("/etc/shells", "/bin/sh\n"),
                       ("/etc/profile", PROFILE)):
        img.add_file(path, data=text)
    if agent_args:
        img.add_file(AGENT_ARGS, data="".join(a + "\n" for a in agent_args))
    for i, s in enumerate(services):
        img.add_file(f"{SERVICE_DIR}/{i:02d}-{os.path.basename(s)}", src=s, mode=0o755)
    for guest, src in (files or {}).items():
        if isinstance(src, bytes):
            img.add_file(guest, data=src)
        else:
            img.add_file(guest, src=src)
    os.makedirs(out_dir, exist_ok=True)
    initrd = os.path.join(out_dir, "initrd.img")
    size = img.write(initrd, compress)
    vmlinux = os.path.join(out_dir, "vmlinux")
    _place_vmlinux(kernel, vmlinux)
    return Image(vmlinux, initrd, kernel, names, size)


def _main():
    p = argparse.ArgumentParser(
        prog="mkimage.py", description="Builds the qubes-lite guest image (vmlinux, initrd.img).")
    build = os.environ.get("BUILD", "build")
    p.add_argument("--bin", default=os.path.join(ROOT, build, "bin"),
                   help="where the programs were built (default: $BUILD/bin)")
    p.add_argument("--out", default=os.path.join(ROOT, build, "rootfs"),
                   help="output directory (default: $BUILD/rootfs)")
    p.add_argument("--cache", default=None,
                   help="kernel cache (default: $QL_KERNEL_CACHE, else build/kernel)")
    p.add_argument("--module", action="append", default=[], metavar="NAME",
                   help="another kernel module (with its dependencies)")
    p.add_argument("--add", action="append", default=[], metavar="GUEST=HOST",
                   help="another file; an executable brings its shared libraries")
    p.add_argument("--service", action="append", default=[], metavar="HOST",
                   help=f"a program /init runs once after the guest agent ({SERVICE_DIR})")
    p.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                   help="another word of the guest agent's command line")
    p.add_argument("--test-payload", action="store_true",
                   help="for tests only: vsock_loopback, the host agent, vm-run and "
                   "rootfs/test-payload.sh, which checks the image from inside")
    p.add_argument("--compress", choices=("gzip", "xz", "none"), default="gzip")
    p.add_argument("--kernel", action="store_true",
                   help="only fetch the kernel and print what is cached")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    say = (lambda m: None) if a.quiet else (lambda m: print(f"mkimage: {m}", file=sys.stderr))
    t0 = time.monotonic()
    try:
        kernel = ensure_kernel(a.cache, log=say)
        if a.kernel:
            print(f"package {kernel.package} {kernel.version}\nrelease {kernel.release}\n"
                  f"vmlinux {kernel.vmlinux}\nmodules {kernel.moddir}")
            return 0
        programs, files = {}, {}
        for spec in a.add:
            guest, sep, host = spec.partition("=")
            if not sep or not guest.startswith("/") or not host:
                p.error(f"--add {spec}: expected /GUEST/PATH=HOST_PATH")
            (programs if os.access(host, os.X_OK) else files)[guest] = host
        extra = dict(modules=a.module, programs=programs, services=a.service,
                     agent_args=a.agent_arg)
        if a.test_payload:
            t = test_payload(a.bin)
            extra = {k: (v + t[k] if isinstance(v, list) else {**v, **t[k]})
                     for k, v in extra.items()}
        img = build_image(a.out, a.bin, kernel, files=files, compress=a.compress, log=say,
                          **extra)
    except ImageError as e:
        print(f"mkimage: {e}", file=sys.stderr)
        return 1
    say(f"{img.vmlinux} ({kernel.release}), {img.initrd} ({img.size / 1e6:.1f} MB, "
        f"modules: {' '.join(img.modules)}) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
