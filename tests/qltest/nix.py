"""The Nix side's tests (tests/nix/): evaluating tests/nix/eval.nix with
nix-instantiate, and running the real programs on what the module wrote,
as its user (made known through nss_wrapper).

    data = nix_eval("host", strs={"example": "quick-start"})
    write_etc(etc, data["etc"])
    run_as_configured([program("qubes-lite-host-agent"), "--check", "--config-only"], etc, tmp)

nixpkgs' lib is looked for as <nixpkgs/lib> in NIX_PATH, else in
../shared/nixpkgs-lib beside the repository (a copy of nixpkgs' lib/); a
test that needs it and finds neither is skipped, saying so."""
import atexit
import functools
import glob
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from qltest import ROOT, TESTS

EVAL = os.path.join(TESTS, "nix", "eval.nix")
NIX = shutil.which("nix-instantiate")
FALLBACK_LIB = os.path.normpath(os.path.join(ROOT, "..", "shared", "nixpkgs-lib", "lib"))

# Nix wants a state directory even to evaluate; keep it out of /nix.
_STATE = tempfile.mkdtemp(prefix="ql-nix-")
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)


def nix_env():
    env = dict(os.environ)
    env.update(NIX_CONFIG="build-users-group =", NIX_STATE_DIR=os.path.join(_STATE, "state"),
               NIX_LOG_DIR=os.path.join(_STATE, "log"), NIX_CONF_DIR=_STATE, HOME=_STATE)
    return env


def need_nix():
    if NIX is None:
        pytest.fail("nix-instantiate is not installed (Debian's nix-bin; scripts/deps.sh "
                    "installs it)")


@functools.lru_cache(maxsize=None)
def _find_lib():
    """(path, None) or (None, why not)."""
    if NIX is None:
        return None, "nix-instantiate is not installed"
    p = subprocess.run([NIX, "--find-file", "nixpkgs/lib"], capture_output=True, text=True,
                       env=nix_env(), timeout=60)
    found = p.stdout.strip()
    if p.returncode == 0 and os.path.isfile(os.path.join(found, "default.nix")):
        return found, None
    if os.path.isfile(os.path.join(FALLBACK_LIB, "default.nix")):
        return FALLBACK_LIB, None
    return None, ("nixpkgs' lib is not available: <nixpkgs/lib> is not in NIX_PATH "
                  f"({os.environ.get('NIX_PATH', 'unset')!r}) and {FALLBACK_LIB} does not exist")


def nixpkgs_lib():
    need_nix()
    path, why = _find_lib()
    if path is None:
        pytest.skip(why)
    return path


def nix_eval(what, *, strs=None, args=None, check=True):
    """Evaluates eval.nix for `what`; --argstr for `strs`, --arg for `args`
    (Nix expressions). Returns the JSON, or with check=False the
    CompletedProcess."""
    lib = nixpkgs_lib()
    cmd = [NIX, "--readonly-mode", "--eval", "--strict", "--json", EVAL,
           "--argstr", "libPath", lib, "--argstr", "what", what]
    for k, v in (strs or {}).items():
        cmd += ["--argstr", k, v]
    for k, v in (args or {}).items():
        cmd += ["--arg", k, v]
    p = subprocess.run(cmd, capture_output=True, text=True, env=nix_env(), timeout=300)
    if not check:
        return p
    assert p.returncode == 0, p.stderr[-6000:]
    return json.loads(p.stdout)


@functools.lru_cache(maxsize=None)
def _host_example(name):
    return json.dumps(nix_eval("host", strs={"example": name}))


def host_example(name):
    """The host module's view of examples.nix's `name` (cached; a copy)."""
    return json.loads(_host_example(name))


def nix_string(s):
    """A Nix string literal."""
    return json.dumps(s).replace("${", "\\${")


def out_paths(mapping):
    """An --arg value setting stub packages' outPaths."""
    return "{ " + " ".join(f"{nix_string(k)} = {nix_string(v)};" for k, v in mapping.items()) + " }"


def asan_options_preload():
    """ASAN_OPTIONS that let a sanitizer build (make check) run with a
    library preloaded before its runtime (nss_wrapper)."""
    return ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0"]))


def nss_wrapper():
    libs = sorted(glob.glob("/usr/lib/*/libnss_wrapper.so")
                  + glob.glob("/usr/lib/libnss_wrapper.so"))
    if not libs:
        pytest.fail("libnss_wrapper.so not found (Debian's libnss-wrapper; scripts/deps.sh "
                    "installs it)")
    return libs[0]


def write_etc(etc, files):
    """The module's /etc/qubes-lite files (keys "qubes-lite/...") under etc."""
    for key, text in files.items():
        rel = key[len("qubes-lite/"):]
        path = os.path.join(etc, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(etc, "vms"), exist_ok=True)


def run_as_configured(args, etc, tmp, user="david", uid=1000, env=None, nss=True):
    """Runs a program with QUBES_LITE_CONFIG_DIR=etc, `user` known to it by
    nss_wrapper (the machine has no such account); nss=False: the
    machine's own users."""
    passwd = os.path.join(tmp, "passwd")
    group = os.path.join(tmp, "group")
    with open(passwd, "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n"
                f"{user}:x:{uid}:{uid}:{user}:/home/{user}:/bin/sh\n")
    with open(group, "w") as f:
        f.write(f"root:x:0:\n{user}:x:{uid}:\n")
    e = dict(os.environ, QUBES_LITE_CONFIG_DIR=str(etc))
    if nss:
        e.update(LD_PRELOAD=nss_wrapper(), NSS_WRAPPER_PASSWD=passwd, NSS_WRAPPER_GROUP=group)
    for k in ("QUBES_LITE_RUNTIME_DIR", "QUBES_LITE_SWITCH_DIR", "QUBES_LITE_SYSFS_ROOT",
              "QUBES_LITE_CROSVM"):
        e.pop(k, None)
    # A sanitizer build (make check) would refuse a library loaded before
    # its runtime.
    e["ASAN_OPTIONS"] = asan_options_preload()
    e.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, env=e, timeout=60)
