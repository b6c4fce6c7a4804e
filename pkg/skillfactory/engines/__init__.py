"""Generation engines behind one interface (`Engine`): transformers everywhere, vLLM where present.

Building an engine from a run spec is `skillfactory.engines.setup.setup_engine`; this package
itself imports neither pydantic nor torch.
"""

from __future__ import annotations

from skillfactory.engines.base import (
    Completion,
    Engine,
    FinishReason,
    Prompt,
    SamplingParams,
    Weights,
)

__all__ = [
    "Completion",
    "Engine",
    "FinishReason",
    "Prompt",
    "SamplingParams",
    "Weights",
]
