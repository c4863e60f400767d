"""flake.nix's outputs, evaluated by calling its `outputs` with a stand-in
nixpkgs (nixpkgs' real lib, stub package sets): the modules, the package
for each system, and the checks, whose build commands are then run here
against the built programs."""
import os
import subprocess

from qltest import BIN, ROOT
from qltest.nix import asan_options_preload, nix_eval, nss_wrapper, out_paths

# The checks preload nss_wrapper, which a sanitizer build (make check)
# would refuse before its own runtime.
ASAN = asan_options_preload()


def test_outputs():
    f = nix_eval("flake")
    assert f["inputs"] == ["nixpkgs"]
    assert f["nixosModules"] == {"default": os.path.join(ROOT, "nix", "module.nix"),
                                 "guest": os.path.join(ROOT, "rootfs", "guest.nix")}
    assert sorted(f["packages"]) == ["aarch64-linux", "x86_64-linux"]
    for system, ps in f["packages"].items():
        assert list(ps) == ["default"]
        p = ps["default"]
        assert p["name"] == "qubes-lite-0.1.0"
        a = p["args"]
        assert a["makeFlags"] == ["PREFIX=$(out)", "DYNAMIC=1", "EXTRA_CFLAGS=-Wno-error"]
        assert [os.path.basename(x).split("-", 1)[1] for x in a["buildInputs"]] == [
            "protobufc", "libseccomp", "libcap", "systemd", "wayland", "jansson", "libmnl"]
        assert [os.path.basename(x).split("-", 1)[1] for x in a["nativeBuildInputs"]] == [
            "pkg-config", "protobufc"]
        # make, then make install: stdenv's phases, nothing overridden.
        assert not {"buildPhase", "installPhase", "configurePhase"} & set(a)
    names = ["example-" + e for e in ("devices", "disposable", "installing-on-nixos",
                                      "offline-vault", "pci-passthrough", "quick-start",
                                      "shared-guest-config", "vm-to-vm")]
    assert f["checkNames"] == {"aarch64-linux": sorted(["package"] + names),
                               "x86_64-linux": sorted(["package"] + names)}
    # The source: the tree without build outputs nor version control.
    assert f["srcKeeps"] == {"build": False, "host": True, ".git": False, "result": False,
                             "Makefile": True, "nix/module.nix": True}
    # The check "package" is the package itself.
    assert f["checkPackage"] == f["packages"]["x86_64-linux"]["default"]["path"]


def test_checks_run(tmp_path):
    """Each example's check: its build command, run with the built
    programs on the PATH (the package is their stand-in) and this machine's
    nss_wrapper as nixpkgs'."""
    nss = tmp_path / "nss_wrapper"
    (nss / "lib").mkdir(parents=True)
    os.symlink(nss_wrapper(), nss / "lib" / "libnss_wrapper.so")
    f = nix_eval("flake", args={"outPaths": out_paths({"nss_wrapper": str(nss)})})
    assert len(f["checks"]) == 8
    for name, check in f["checks"].items():
        assert check["name"] == f"qubes-lite-{name}"
        assert check["nativeBuildInputs"] == [f["checkPackage"]]
        work = tmp_path / name
        work.mkdir()
        out = tmp_path / f"{name}.out"
        env = dict(os.environ, out=str(out), PATH=f"{BIN}:{os.environ['PATH']}",
                   ASAN_OPTIONS=ASAN)
        for k in ("QUBES_LITE_CONFIG_DIR", "QUBES_LITE_RUNTIME_DIR", "LD_PRELOAD"):
            env.pop(k, None)
        r = subprocess.run(["bash", "-c", check["buildCommand"]], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
        assert out.exists(), name
        assert f"{name[len('example-'):]}: " in r.stdout and "VMs checked" in r.stdout
        assert sorted(os.listdir(work / "etc" / "vms"))
        assert (work / "units").is_dir()


def test_a_check_fails_on_a_bad_file(tmp_path):
    """The checks can fail: the quick start's, with host.json spoilt."""
    nss = tmp_path / "nss_wrapper"
    (nss / "lib").mkdir(parents=True)
    os.symlink(nss_wrapper(), nss / "lib" / "libnss_wrapper.so")
    f = nix_eval("flake", args={"outPaths": out_paths({"nss_wrapper": str(nss)})})
    cmd = f["checks"]["example-quick-start"]["buildCommand"]
    spoil = "echo '{\"vmm\": \"kvmtool\"}' > etc/host.json; "
    cmd = cmd.replace("qubes-lite-host-agent --check", spoil + "qubes-lite-host-agent --check")
    env = dict(os.environ, out=str(tmp_path / "out"), PATH=f"{BIN}:{os.environ['PATH']}",
               ASAN_OPTIONS=ASAN)
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "key 'vmm': 'kvmtool' is not a VMM (crosvm or qemu)" in r.stderr
    assert not (tmp_path / "out").exists()
