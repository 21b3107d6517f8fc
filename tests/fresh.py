"""Runs a script in a fresh Python process in which `seq2seq` (or more) cannot be imported."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this process")

    sys.meta_path.insert(0, _Block())
    """
)


def run_blocked(script: str, *args: str, blocked=("seq2seq",), timeout=300, cwd=None):
    """Runs `script` with the named top-level packages unimportable; returns the process."""
    code = f"BLOCKED = {tuple(blocked)!r}\n" + BLOCKER + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
