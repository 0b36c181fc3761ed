"""Start ``vllm-elastic serve`` on 127.0.0.1 for one test module, and the core's expected output.

One server per module (a start costs ~60 s on 2 cores). The server runs the repository's tiny
model in float32; the expected tokens come from the core decoders on the same checkpoint, with the
settings the plugin applies (``gen_length`` = max_tokens, ``early_stop`` forced on).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "llada-tiny"
MODEL_NAME = "llada-tiny"
MAX_MODEL_LEN = 512
START_TIMEOUT_S = 420.0  # engine start on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int, *extra: str) -> list[str]:
    script = Path(sys.executable).parent / "vllm-elastic"  # the console script of setup.py
    head = [str(script)] if script.exists() else [sys.executable, "-m", "vllm_elastic.plugin.serve"]
    return [
        *head,
        "serve",
        str(MODEL_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        MODEL_NAME,
        "--dtype",
        "float32",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        *extra,
    ]


class Server:
    """A server process of this test module; ``url`` is its OpenAI base URL."""

    def __init__(self, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + "/v1"
        env = dict(os.environ, VLLM_PLUGINS="elastic")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (open while the server runs)
        self.proc = subprocess.Popen(
            ["nice", "-n", "19", *serve_command(self.port, *extra)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the engine's processes too
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.root + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(2)
        raise TimeoutError(f"server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.root + path, timeout=30) as r:
            return r.read().decode()

    def metric(self, name: str, label: str = "") -> float:
        """The sum of a metric's samples on /metrics over the label sets that contain ``label``."""
        pattern = re.compile(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", re.MULTILINE)
        found = pattern.findall(self.get("/metrics"))
        return sum(float(v) for labels, v in found if label in labels)

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()


def expected_tokens(model, prompt_ids: list[int], max_tokens: int, extra: dict) -> list[int]:
    """The core decoder's tokens as the server hands them out (the EOS that ends it included)."""
    from vllm_elastic.core.generate import generate
    from vllm_elastic.core.settings import DecodeSettings

    s = DecodeSettings.from_dict({**extra, "gen_length": max_tokens, "early_stop": True})
    (r,) = generate(model, [prompt_ids], s)
    return r.tokens + [model.config.eos_token_id] if r.finished_by_eos else r.tokens


def expected_logprobs(model, prompt_ids: list[int], max_tokens: int, extra: dict, k: int):
    """The core decoder's tokens (as ``expected_tokens``) and their logprob records at commit."""
    from vllm_elastic.core.generate import new_state, step
    from vllm_elastic.core.settings import DecodeSettings

    s = DecodeSettings.from_dict(
        {**extra, "gen_length": max_tokens, "early_stop": True, "logprobs": k}
    )
    state = new_state(model, prompt_ids, s)
    while not state.done:
        step(model, [state])
    r = state.result()
    tokens = r.tokens + [model.config.eos_token_id] if r.finished_by_eos else r.tokens
    start = len(prompt_ids)
    return tokens, state.logprobs.span(start, start + len(tokens))
