"""Starting a real `litellm` proxy process with a generated config (end-to-end tests and benchmarks)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.upstream import free_port

REPO = Path(__file__).resolve().parents[2]
LITELLM = Path(sys.executable).parent / "litellm"
CALLBACK = "solaris_tokens.proxy.handler.handler"
FAKE_MODELS = ("fake-ok", "fake-fail", "fake-gated", "fake-slow")


def new_master_key() -> str:
    return "sk-" + secrets.token_hex(32)


def proxy_config(
    upstream_url: str,
    *,
    callback: bool | str = True,
    custom_auth: bool = False,
    shipped_models: bool = True,
) -> dict[str, Any]:
    """The fake upstream's models (plus the repository config's own, to prove it loads), with or without the plugin."""
    models: list[dict[str, Any]] = [
        {
            "model_name": name,
            "litellm_params": {"model": f"openai/{name}", "api_base": upstream_url, "api_key": "fake-upstream-key"},
        }
        for name in FAKE_MODELS
    ]
    shipped = yaml.safe_load((REPO / "litellm_config.yaml").read_text())
    if shipped_models:
        models += shipped["model_list"]
    litellm_settings: dict[str, Any] = {"disable_hf_tokenizer_download": True, "num_retries": 0}
    if callback:
        litellm_settings["callbacks"] = [CALLBACK if callback is True else callback]
    general: dict[str, Any] = {"master_key": "os.environ/LITELLM_MASTER_KEY"}
    if custom_auth:
        general["custom_auth"] = "tests.e2e.keys.user_api_key_auth"
    return {"model_list": models, "litellm_settings": litellm_settings, "general_settings": general}


class ProxyProcess:
    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        env: dict[str, str],
        *,
        port: int | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.workdir = workdir
        self.cpus = cpus  # CPU affinity of the proxy and all its threads (benchmarks), None: any
        self.config = config
        self.port = port or free_port()
        self.master_key = env.get("LITELLM_MASTER_KEY") or new_master_key()
        self.env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "PYTHONPATH": str(REPO),
            **env,
            "LITELLM_MASTER_KEY": self.master_key,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"proxy-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> ProxyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / f"config-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(LITELLM), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, self.cpus)) if self.cpus else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health/liveliness", timeout=1).status_code == 200 and self._plugin_ready():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"litellm did not become ready in {timeout}s:\n{self.log_tail()}")

    def _plugin_ready(self) -> bool:
        """The plugin builds its stores in the background once the proxy is up: a request naming no
        user gets its 401 only when they are ready (and the embedded Redis address is written)."""
        if CALLBACK not in self.config.get("litellm_settings", {}).get("callbacks", []):
            return True
        response = httpx.post(
            self.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {self.master_key}"},
            json={"model": FAKE_MODELS[0], "messages": [{"role": "user", "content": "ping"}]},
            timeout=30,
        )
        return response.status_code == 401

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
