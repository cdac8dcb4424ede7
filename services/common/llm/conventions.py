"""Usage as providers report it, read into our normal form (services/common/usage.py).

Our form: `cached_prompt_tokens` (cache reads) and `cache_creation_prompt_tokens` (cache writes)
are parts of `prompt_tokens`; `reasoning_tokens` is part of `completion_tokens`. So that
`pricing.cost_of` of the result equals the provider's bill, every provider's figures are read
into that form here, at the edge. The conventions met:

- OpenAI, vLLM, Ollama and most servers: `prompt_tokens` with
  `prompt_tokens_details.cached_tokens` inside it; `completion_tokens` with
  `completion_tokens_details.reasoning_tokens` inside it; total_tokens = prompt + completion.
- Gemini's OpenAI-compatible API: `reasoning_tokens` ("thoughts") OUTSIDE `completion_tokens`;
  total_tokens = prompt + completion + reasoning.
- DeepSeek: `prompt_cache_hit_tokens` (+ `prompt_cache_miss_tokens` = `prompt_tokens`): inside.
- Anthropic (`input_tokens`, `output_tokens`): `cache_read_input_tokens` and
  `cache_creation_input_tokens` OUTSIDE `input_tokens`; thinking inside `output_tokens`.
- A proxy that passes Anthropic's cache fields on beside `prompt_tokens`: outside or inside,
  as its total_tokens tells (with none, the larger reading, flagged estimated).
- LiteLLM's own Usage (what its Anthropic and Gemini providers build): cache reads
  (`cached_tokens`) and writes (`cache_creation_tokens`, mirrored as `cache_write_tokens`)
  inside `prompt_tokens`; reasoning inside `completion_tokens` (it adds Gemini's thoughts).

Where the fields alone do not say whether a part is inside or outside its whole, total_tokens
does: the reading whose prompt + completion equals it wins. A part larger than its whole can
only be outside it (completion_tokens 17 with reasoning_tokens 57 reads as 74 completion
tokens, 57 of them reasoning: a billed call never loses tokens); with no total_tokens to
confirm that, the usage is flagged `estimated`, with a warning. So is a usage whose total_tokens
fits no reading (the plain one, parts inside where they fit, is kept), and one with a count
missing or unreadable (negative, not a number): a missing prompt or completion count takes our
tokenizer's estimate (`fallback`), a missing part counts 0. Nothing here raises for a usage
that is a mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from itertools import product

from services.common.usage import Usage

__all__ = ["normalise_usage"]

log = logging.getLogger(__name__)

_NO_DETAILS: Mapping[str, object] = {}


def _count(value: object) -> int | None:
    """A token count as a provider may spell it (17, 17.0, "17"); None when it is not one."""
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


class _Reader:
    """Reads counts out of a usage mapping, noting every value that is present but unreadable."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def count(self, mapping: Mapping[str, object], *keys: str) -> int | None:
        """The first of `keys` present (and not null) in `mapping`; None if none is or it is unreadable."""
        for key in keys:
            value = mapping.get(key)
            if value is None:
                continue
            count = _count(value)
            if count is None:
                self.problems.append(f"{key}={value!r:.40}")
            return count
        return None

    def details(self, mapping: Mapping[str, object], *keys: str) -> Mapping[str, object]:
        for key in keys:
            value = mapping.get(key)
            if value is None:
                continue
            if isinstance(value, Mapping):
                return value
            self.problems.append(f"{key} is {type(value).__name__}, not an object")
            return _NO_DETAILS
        return _NO_DETAILS


def _options(whole: int, part: int, *, outside_first: bool) -> list[tuple[int, bool]]:
    """The readings of a whole with a part: (normalised whole, whether the part was outside).
    The part inside is possible only if it fits; the preferred reading comes first."""
    if not part:
        return [(whole, False)]
    inside = [(whole, False)] if part <= whole else []
    outside = [(whole + part, True)]
    return outside + inside if outside_first else inside + outside


def normalise_usage(
    raw: Mapping[str, object],
    *,
    model: str = "",
    fallback: Callable[[], Usage] | None = None,
) -> Usage:
    """The usage a provider reported (an OpenAI-shaped usage object as a mapping, in any of the
    conventions of the module docstring), in our normal form. `fallback` gives our tokenizer's
    estimate of the call, used for a prompt or completion count the usage lacks. `model` names
    the call in warnings. Never raises."""
    read = _Reader()
    prompt_details = read.details(raw, "prompt_tokens_details", "input_tokens_details")
    completion_details = read.details(raw, "completion_tokens_details", "output_tokens_details")
    prompt = read.count(raw, "prompt_tokens")
    anthropic_cache = prompt is None and "input_tokens" in raw
    if prompt is None:
        prompt = read.count(raw, "input_tokens")
    completion = read.count(raw, "completion_tokens", "output_tokens")
    total = read.count(raw, "total_tokens") or None
    reasoning = read.count(completion_details, "reasoning_tokens") or 0
    cache_hit = read.count(raw, "prompt_cache_hit_tokens")
    anthropic_read = read.count(raw, "cache_read_input_tokens")
    anthropic_written = read.count(raw, "cache_creation_input_tokens")
    # Anthropic's own naming (input_tokens) puts its cache fields outside input_tokens (OpenAI's
    # Responses API also says input_tokens, with its cached_tokens inside).
    anthropic_cache = anthropic_cache and (anthropic_read is not None or anthropic_written is not None)
    cached = max(read.count(prompt_details, "cached_tokens") or 0, cache_hit or 0, anthropic_read or 0)
    written = max(
        read.count(prompt_details, "cache_write_tokens", "cache_creation_tokens") or 0, anthropic_written or 0
    )
    if prompt is None and cache_hit is not None:  # DeepSeek: hit + miss is the prompt
        miss = read.count(raw, "prompt_cache_miss_tokens")
        prompt = None if miss is None else cache_hit + miss

    notes = list(read.problems)
    estimate = fallback() if fallback is not None and (prompt is None or completion is None) else None
    if prompt is None:
        notes.append("no prompt token count")
        prompt = estimate.prompt_tokens if estimate is not None else 0
    if completion is None:
        notes.append("no completion token count")
        completion = estimate.completion_tokens if estimate is not None else 0

    # Parts are read inside their whole first (Anthropic's cache: outside first); a part larger
    # than its whole has only the outside reading. total_tokens picks among the readings.
    prompts = _options(prompt, cached + written, outside_first=anthropic_cache)
    completions = _options(completion, reasoning, outside_first=False)
    readings = list(product(prompts, completions))
    chosen = readings[0]
    if total is not None:
        matching = [r for r in readings if r[0][0] + r[1][0] == total]
        if not matching:
            notes.append(f"total_tokens {total} fits no reading of prompt {prompt} and completion {completion}")
        else:
            chosen = matching[0]
            if len({(p[0], c[0]) for p, c in matching}) > 1:
                notes.append(f"total_tokens {total} fits more than one reading")
    else:
        if len(prompts) > 1 and not anthropic_cache and (anthropic_read or anthropic_written):
            # Anthropic's cache fields beside prompt_tokens (a proxy's): inside or outside, nothing
            # tells; the larger reading.
            chosen = (max(prompts), chosen[1])
            notes.append("Anthropic's cache fields beside prompt_tokens and no total_tokens: read outside it")
        elif chosen[0][1] and not anthropic_cache:
            notes.append("cache reads and writes larger than the prompt and no total_tokens: read outside it")
        if chosen[1][1]:
            notes.append("reasoning larger than the completion and no total_tokens: read outside it")
    (prompt_total, _), (completion_total, _) = chosen
    if notes:
        log.warning(
            "%s: usage %s could not be reconciled (%s); recorded as estimated", model, _brief(raw), "; ".join(notes)
        )
    return Usage(
        prompt_tokens=max(prompt_total, cached + written),
        completion_tokens=max(completion_total, reasoning),
        cached_prompt_tokens=cached,
        reasoning_tokens=reasoning,
        estimated=bool(notes),
        cache_creation_prompt_tokens=written,
    )


def _brief(raw: Mapping[str, object]) -> str:
    return repr(dict(raw))[:300]
