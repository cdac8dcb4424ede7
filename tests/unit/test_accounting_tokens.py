"""Token counting: exact tiktoken counts, per-model tokenizers, offline only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import tiktoken

from services.common import tokens
from services.common.errors import InvalidArgument
from services.common.tokens import (
    count_message_tokens,
    count_text_tokens,
    count_tokens,
)

PLAN_TEXTS = [
    "Simple test message.",
    "A longer message with more tokens to count accurately.",
    "Technical content: async/await, React.FC<Props>, TypeScript generics",
    "Very long " + "message " * 100,
]
PLAN_MODELS = ["claude-3-5-sonnet-20241022", "gpt-4", "gpt-3.5-turbo", "claude-3-5-haiku-20241022"]
CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


@pytest.mark.parametrize("text", PLAN_TEXTS)
def test_text_counts_equal_tiktoken_for_gpt4(text):
    assert count_text_tokens("gpt-4", text) == len(tiktoken.encoding_for_model("gpt-4").encode(text))


@pytest.mark.parametrize(
    "model,encoding",
    [
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("gpt-4o", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
    ],
)
def test_openai_models_use_their_own_encoding_exactly(model, encoding):
    text = PLAN_TEXTS[2]
    result = count_tokens(model, text=text)
    assert result == tokens.TokenCount(len(tiktoken.get_encoding(encoding).encode(text)), True, f"tiktoken/{encoding}")


@pytest.mark.parametrize("model", PLAN_MODELS)
def test_three_message_chat_counts_between_10_and_50(model):
    assert 10 < count_message_tokens(model, CHAT) < 50


def test_chat_overhead_follows_openais_format():
    enc = tiktoken.get_encoding("cl100k_base")
    content = sum(len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in CHAT)
    assert count_message_tokens("gpt-4", CHAT) == content + 3 * len(CHAT) + 3
    named = [{"role": "user", "content": "hi", "name": "alice"}]
    assert (
        count_message_tokens("gpt-4", named)
        == count_message_tokens("gpt-4", [{"role": "user", "content": "hi"}]) + len(enc.encode("alice")) + 1
    )


def test_methods_say_what_they_are():
    assert count_tokens("anthropic/claude-3-5-sonnet-20241022", text="hello") == count_tokens(
        "claude-3-5-sonnet-20241022", text="hello"
    )
    claude = count_tokens("claude-3-5-sonnet-20241022", messages=CHAT)
    assert (claude.exact, claude.tokenizer) == (False, "anthropic-tokenizer")
    sim = count_tokens("sim/debater", text="hello world")
    assert (sim.tokens, sim.exact, sim.tokenizer) == (2, True, "tiktoken/cl100k_base")
    other = count_tokens("mistral/mistral-large-latest", text="hello world")
    assert (other.exact, other.tokenizer) == (False, "tiktoken/cl100k_base")


def test_special_token_text_is_counted_as_text():
    assert count_text_tokens("gpt-4", "<|endoftext|>") == len(
        tiktoken.get_encoding("cl100k_base").encode_ordinary("<|endoftext|>")
    )


def test_exactly_one_of_text_and_messages():
    with pytest.raises(InvalidArgument) as both:
        count_tokens("gpt-4", text="a", messages=CHAT)
    with pytest.raises(InvalidArgument):
        count_tokens("gpt-4")
    with pytest.raises(InvalidArgument) as no_model:
        count_tokens("", text="a")
    assert [v.field for v in both.value.violations] == ["text"]
    assert [v.field for v in no_model.value.violations] == ["model"]


def test_a_damaged_tokenizer_file_is_an_error_not_a_download(tmp_path, monkeypatch):
    url, _ = tokens._TIKTOKEN_FILES["cl100k_base"]
    import hashlib

    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"not a tokenizer")
    monkeypatch.setattr(tokens, "tokenizer_dir", lambda: tmp_path)
    with pytest.raises(tokens.TokenizerUnavailable, match="sha256"):
        tokens._tiktoken_encoding.__wrapped__("cl100k_base")
    with pytest.raises(tokens.TokenizerUnavailable, match="not found"):
        tokens._tiktoken_encoding.__wrapped__("o200k_base")


def test_counting_needs_no_network_and_never_imports_litellm():
    """A fresh process with every socket refused and a bogus proxy still counts every family."""
    script = textwrap.dedent(
        """
        import socket, sys
        def refuse(*a, **k):
            raise OSError("network blocked by test")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from services.common.tokens import count_tokens
        models = ["gpt-4", "gpt-4o", "p50k:text-davinci-003", "claude-3-5-sonnet-20241022", "deepseek/deepseek-chat"]
        for model in models + ["sim/judge"]:
            model = model.split(":")[-1]
            print(model, count_tokens(model, text="Offline tokens only.").tokens)
        assert "litellm" not in sys.modules
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "TIKTOKEN_CACHE_DIR": "/nonexistent",
        "PYTHONPATH": ":".join(sys.path),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 6
