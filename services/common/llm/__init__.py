"""The LLM layer: one interface (base.py), the router that serves it (router.py), the simulated
models (simulated/), and the real-provider paths (openai_compat.py, litellm_provider.py).

Importing this package imports neither LiteLLM nor httpx; they load on the first real call.
"""

from services.common.llm.base import (
    ChatMessage,
    CollectedCompletion,
    Completion,
    CompletionRequest,
    DeltaSink,
    LLMClient,
    LLMError,
    ModelNotAllowed,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ReasoningDelta,
    StreamEvent,
    StreamStalled,
    TextDelta,
    UnknownModel,
    collect,
    stream_to,
)
from services.common.llm.guard import ProviderBadChunk
from services.common.llm.router import LLMRouter, build_llm_client
from services.common.llm.settings import Endpoint, LLMSettings

__all__ = [
    "ChatMessage",
    "CollectedCompletion",
    "Completion",
    "CompletionRequest",
    "DeltaSink",
    "Endpoint",
    "LLMClient",
    "LLMError",
    "LLMRouter",
    "LLMSettings",
    "ModelNotAllowed",
    "ProviderBadChunk",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "ReasoningDelta",
    "StreamEvent",
    "StreamStalled",
    "TextDelta",
    "UnknownModel",
    "build_llm_client",
    "collect",
    "stream_to",
]
