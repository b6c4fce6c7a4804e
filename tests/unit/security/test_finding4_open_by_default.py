"""Issue 15, finding 4: open by default. A service refuses to start on a non-loopback address
without a token unless `--insecure-no-auth` is given, and says so; on loopback (a laptop, the
local cluster) it still starts without one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.serving.server import ServingConfig

NO_TOKEN_ENV = {k: v for k, v in os.environ.items() if k != "SKILLFACTORY_TOKEN"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "reward.example.com"])
def test_a_config_without_a_token_on_a_reachable_address_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="--insecure-no-auth"):
        ServingConfig(host=host)
    assert ServingConfig(host=host, insecure_no_auth=True).insecure_no_auth
    assert ServingConfig(host=host, token="t").token == "t"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "localhost", "::1"])
def test_loopback_needs_no_token(host: str) -> None:
    assert ServingConfig(host=host).token is None


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "reward"],
        ["serve", "composer", "--data-root", "."],
        ["learner", "serve", "--state-dir", "s"],
    ],
)
def test_every_service_command_refuses_and_says_how(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKILLFACTORY_TOKEN", raising=False)
    result = CliRunner().invoke(app, [*command, "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "--insecure-no-auth" in result.output and "token" in result.output


def test_insecure_no_auth_starts_and_warns() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "skillfactory.cli", "serve", "reward", "--host", "0.0.0.0"]
        + ["--port", "0", "--metrics-port", "-1", "--insecure-no-auth"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**NO_TOKEN_ENV, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        ready = json.loads(process.stdout.readline())
        assert ready["auth"] is False and ready["address"].startswith("0.0.0.0:")
        time.sleep(1.0)  # the SIGTERM handler is installed just after the ready line
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "without authentication" in stderr
