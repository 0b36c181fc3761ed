"""Run generated code against tests in a separate Python process with a timeout and rlimits.

Never ``exec`` model output in the scorer's own process: the child gets a CPU-time limit, an
address-space cap, no core files, and is killed when the wall-clock timeout expires.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

TIMEOUT_S = 5.0
MEMORY_BYTES = 512 * 1024 * 1024
CPU_SECONDS = 3

_RUNNER = r"""
import json, sys
spec = json.loads(sys.stdin.read())
scope = {}
exec(spec["code"], scope)
fn = scope[spec["entry_point"]]
ok = all(fn(x) == want for x, want in spec["tests"])
print(json.dumps({"passed": bool(ok)}))
"""


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def run_tests(code: str, entry_point: str, tests: list, timeout_s: float = TIMEOUT_S) -> bool:
    """True when ``code`` defines ``entry_point`` and it returns the expected value on every test."""
    payload = json.dumps({"code": code, "entry_point": entry_point, "tests": tests})
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _RUNNER],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=_limit_child,
        )
    except subprocess.TimeoutExpired:
        return False
    if proc.returncode != 0:
        return False
    try:
        return bool(json.loads(proc.stdout.strip().splitlines()[-1])["passed"])
    except (ValueError, IndexError, KeyError):
        return False
