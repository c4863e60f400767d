"""Shared pytest set-up for the integration tests: where the programs are.

Fixtures that start the guest agent live in guestfix.py, those for the host
agent and vm-run in hostfix.py; both are imported here.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
BIN = os.path.join(BUILD, "bin")


def program(name):
    """Path of a built program; fails clearly when it was not built."""
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} not built (run make)")
    return path


# Fixtures are plain imports: pytest_plugins is only allowed in a
# top-level conftest, and the tests are run from the project root.
from guestfix import *  # noqa: E402,F401,F403
from hostfix import *  # noqa: E402,F401,F403
from vmmfix import *  # noqa: E402,F401,F403
