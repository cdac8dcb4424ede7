"""The LLM client the services use: allowlist, dispatch, retries of unbilled failures, fallbacks.

    llm = build_llm_client(settings)
    async for event in llm.stream(CompletionRequest(model="sim/debater", messages=...)): ...

Dispatch by model name:
- `sim/...`: the simulated models (simulated/), with the responders the composition root passes in;
- `<endpoint>/...` for an endpoint in LLM_ENDPOINTS: that OpenAI-compatible server, through
  the lean SSE reader (openai_compat.py), the same reader on httpx (openai_httpx.py) or LiteLLM,
  as the endpoint says;
- `openai/...`: the lean reader against LLM_OPENAI_API_BASE with OPENAI_API_KEY (unless
  LLM_OPENAI_LEAN is false);
- `anthropic/...`: Anthropic's Messages stream on the lean path (anthropic_native.py) against
  LLM_ANTHROPIC_API_BASE with ANTHROPIC_API_KEY (unless LLM_ANTHROPIC_LEAN is false);
- anything else: LiteLLM (litellm_provider.py), imported on first use only.

A model is checked against the allowlist before anything else; a request carries no api_base
or key, so a caller can reach only what the settings allow.

Retries and fallbacks here are only for calls the provider did not bill: an HTTP error status,
a connection that failed, a first-token timeout before the provider answered (`LLMError.billed`
False). A failure after the provider accepted the call (it answered 200: a first-token timeout
while it sends nothing, a stall during its reasoning, a malformed chunk) is raised to the
caller at once, billed, with what streamed: retrying it here would hide a call the provider
bills. The caller records it (an estimate) and retries it, if it does, as a new attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import replace

from services.common.llm.base import (
    Completion,
    CompletionRequest,
    DeltaSink,
    LLMClient,
    LLMError,
    ModelNotAllowed,
    RateLimited,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    UnknownModel,
    stream_to,
)
from services.common.llm.settings import ANTHROPIC_KEY_ENV, OPENAI_KEY_ENV, LLMSettings
from services.common.llm.simulated import Responder, SimulatedLLM, is_simulated
from services.common.metrics import NO_TIMER, LLMMetrics, ModelCallTimer, NoTimer

log = logging.getLogger(__name__)


class LLMRouter:
    def __init__(
        self,
        settings: LLMSettings,
        *,
        responders: Mapping[str, Responder] | None = None,
        metrics: LLMMetrics | None = None,
    ):
        self.settings = settings
        self.metrics = metrics  # None: metrics off
        self.simulated = SimulatedLLM(
            responders=responders,
            first_token_latency=settings.sim_first_token_latency,
            tokens_per_second=settings.sim_tokens_per_second,
            seed=settings.sim_seed,
        )
        self._providers: dict[str, LLMClient] = {}
        self._sleep = asyncio.sleep  # the backoff's sleep (tests record the delays)

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        return self._stream(request)

    def candidates(self, model: str) -> list[str]:
        """The model, then its configured fallbacks that are allowed too."""
        chain = [model]
        for alternative in self.settings.llm_fallbacks.get(model, ()):
            if alternative in chain:
                continue
            if self.settings.model_allowed(alternative):
                chain.append(alternative)
            else:
                log.warning("fallback %s of %s is not in the allowlist; skipped", alternative, model)
        return chain

    async def _stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        plan = _Attempts(self, request)
        for attempt_request in plan:
            started = False
            timer = self._timer(attempt_request.model)
            try:
                provider = self.provider_for(attempt_request.model)
                # aclosing: a consumer that stops early (a cancelled debate) frees the connection now.
                async with contextlib.aclosing(provider.stream(attempt_request)) as events:
                    async for event in events:
                        if isinstance(event, Completion):
                            timer.finished(event.usage.prompt_tokens, event.usage.completion_tokens)
                        elif not started:
                            timer.first_token()
                        started = True
                        yield event
                return
            except LLMError as caught:
                await plan.failed(caught, started=started)

    async def stream_to(self, request: CompletionRequest, sink: DeltaSink) -> Completion:
        """`stream` pushed (base.stream_to): each delta handed to `sink`, the Completion returned;
        the same allowlist, retries and fallbacks, without an async generator of the router's
        between the provider and the sink."""
        plan = _Attempts(self, request)
        started = False
        timer: ModelCallTimer | NoTimer = NO_TIMER

        def forward(event: TextDelta | ReasoningDelta) -> object:
            nonlocal started
            if not started:
                started = True
                timer.first_token()
            return sink(event)

        for attempt_request in plan:
            timer = self._timer(attempt_request.model)
            try:
                completion = await stream_to(self.provider_for(attempt_request.model), attempt_request, forward)
                timer.finished(completion.usage.prompt_tokens, completion.usage.completion_tokens)
                return completion
            except LLMError as caught:
                await plan.failed(caught, started=started)
        raise AssertionError("unreachable: _Attempts raises the last error when it runs out")

    # -- metrics (no-ops when they are off) ---------------------------------------------------
    def _timer(self, model: str) -> ModelCallTimer | NoTimer:
        return self.metrics.call(model) if self.metrics is not None else NO_TIMER

    def _count_error(self, model: str, error: LLMError) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(model, error.reason).inc()

    def _count_retry(self, model: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(model).inc()

    def _count_fallback(self, model: str, fallback: str) -> None:
        if self.metrics is not None:
            self.metrics.fallbacks.labels(model, fallback).inc()

    def _retry_delay(self, error: LLMError, attempt: int) -> float:
        cap = self.settings.llm_backoff_max
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(max(0.0, error.retry_after), cap)
        # Exponential backoff with jitter, so that many debates do not retry in step.
        return min(cap, self.settings.llm_backoff_base * 2**attempt) * random.uniform(0.5, 1.0)

    def provider_for(self, model: str) -> LLMClient:
        if is_simulated(model):
            return self.simulated
        prefix, _, rest = model.partition("/")
        if not rest:
            raise UnknownModel(f"model {model!r} names no provider (expected provider/model)", model=model)
        settings = self.settings
        lean = (prefix == "openai" and settings.llm_openai_lean) or (
            prefix == "anthropic" and settings.llm_anthropic_lean
        )
        key = prefix if prefix in settings.llm_endpoints or lean else "litellm"
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = self._make_provider(key)
        return provider

    def _make_provider(self, key: str) -> LLMClient:
        # Lazy, not a cycle dodge: the providers import httpx (LiteLLM later), loaded on the first real call only.
        from services.common.llm.litellm_provider import LiteLLMProvider
        from services.common.llm.openai_compat import OpenAICompatProvider

        settings = self.settings
        endpoint = settings.llm_endpoints.get(key)
        if endpoint is not None and endpoint.transport == "lean":
            return OpenAICompatProvider(settings, api_base=endpoint.api_base, api_key_env=endpoint.api_key_env)
        if endpoint is not None and endpoint.transport == "httpx":
            from services.common.llm.openai_httpx import HttpxOpenAICompatProvider

            return HttpxOpenAICompatProvider(settings, api_base=endpoint.api_base, api_key_env=endpoint.api_key_env)
        if endpoint is not None:
            return LiteLLMProvider(settings, api_base=endpoint.api_base, api_key_env=endpoint.api_key_env)
        if key == "openai":
            return OpenAICompatProvider(
                settings, api_base=settings.llm_openai_api_base, api_key_env=OPENAI_KEY_ENV, openai=True
            )
        if key == "anthropic":
            from services.common.llm.anthropic_native import AnthropicProvider

            return AnthropicProvider(settings, api_base=settings.llm_anthropic_api_base, api_key_env=ANTHROPIC_KEY_ENV)
        return LiteLLMProvider(settings)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        self._providers.clear()


class _Attempts:
    """The attempts of one call, in order: the model, then its allowed fallbacks, each tried up
    to LLM_RETRIES + 1 times. Iterating yields each attempt's request; after a failure the
    caller awaits `failed`, which re-raises what must not be retried, or counts the failure and
    waits out the backoff. When the attempts run out, the iteration raises the last error.

    Only calls the provider did not bill are retried (see the module's docstring): a failure
    after text went out, or one the provider bills, is raised to the caller at once."""

    def __init__(self, router: LLMRouter, request: CompletionRequest):
        settings = router.settings
        if not settings.model_allowed(request.model):
            raise ModelNotAllowed(f"model {request.model!r} is not in the allowlist", model=request.model)
        self.router = router
        self.request = request
        self.error: LLMError | None = None
        self._model = request.model
        self._attempt = 0
        self._give_up_model = False

    def __iter__(self) -> Iterator[CompletionRequest]:
        router, request = self.router, self.request
        for model in router.candidates(request.model):
            if self.error is not None:
                log.warning("falling back from %s to %s after: %s", request.model, model, self.error.message)
                router._count_fallback(request.model, model)
            self._model, self._give_up_model = model, False
            attempt_request = request if model == request.model else replace(request, model=model)
            for attempt in range(router.settings.llm_retries + 1):
                self._attempt = attempt
                yield attempt_request
                if self._give_up_model:
                    break
        assert self.error is not None
        raise self.error

    async def failed(self, caught: LLMError, *, started: bool) -> None:
        """After an attempt raised `caught`; `started`: a delta of it already went to the caller."""
        router = self.router
        router._count_error(self._model, caught)
        if started or caught.billed:
            # Text went out (never replayed, never mixed with another model's), or the provider
            # accepted the call and bills it: the caller records that call and retries, if it
            # does, as a new attempt under its own key.
            raise caught
        self.error = caught
        if not caught.retryable or self._attempt == router.settings.llm_retries:
            self._give_up_model = True
            return
        delay = router._retry_delay(caught, self._attempt)
        log.info("retrying %s in %.2fs (attempt %d): %s", self._model, delay, self._attempt + 2, caught.message)
        router._count_retry(self._model)
        await router._sleep(delay)


def build_llm_client(
    settings: LLMSettings, *, responders: Mapping[str, Responder] | None = None, metrics: LLMMetrics | None = None
) -> LLMRouter:
    """The LLMClient for a service's settings (one per process; `await client.aclose()` at shutdown).

    `responders` serve `sim/...` models of the service's own (name -> request -> reply text), e.g.
    the judge's `{"sim/judge": simulated_judge.respond}`; ValueError for a name outside `sim/`.
    `metrics`: the process's model-call metrics (None: off)."""
    return LLMRouter(settings, responders=responders, metrics=metrics)
