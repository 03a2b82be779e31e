"""The estimate before a call (SPEC F3): offline tiktoken counts + expected completion, 100 on failure."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import tiktoken

from solaris_tokens import estimate as estimate_module
from solaris_tokens.estimate import (
    IMAGE_TOKENS,
    IMAGE_TOKENS_LOW,
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    Estimator,
    encoding_for,
)
from solaris_tokens.settings import Settings

QUESTION = "Explique o teorema de Pitágoras em poucas palavras."


@pytest.fixture
def estimator() -> Estimator:
    return Estimator(Settings(default_completion_estimate=400, fallback_estimate=100))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a connection fails the test."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the estimator tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def cl100k(text: str) -> int:
    return len(encoding_for("gpt-4").encode_ordinary(text))


def test_chat_prompt_counts_tokens_plus_message_overhead(estimator: Estimator) -> None:
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 50}
    result = estimator.estimate(body)
    assert result.prompt == cl100k(QUESTION) + TOKENS_PER_MESSAGE + REPLY_PRIMING
    assert result.completion == 50
    assert result.total == result.prompt + 50
    assert result.exact


def test_model_encoding_is_used_where_known(no_network: None) -> None:
    assert encoding_for("gpt-4o").name == "o200k_base"
    assert encoding_for("openai/gpt-4o-mini").name == "o200k_base"
    assert encoding_for("gpt-3.5-turbo").name == "cl100k_base"
    assert encoding_for("text-davinci-003").name == "p50k_base"
    # unknown to tiktoken (or an encoding LiteLLM does not bundle): cl100k_base
    assert encoding_for("claude-sonnet-4-5").name == "cl100k_base"
    assert encoding_for("solaris-mock").name == "cl100k_base"
    assert encoding_for("text-davinci-001").name == "cl100k_base"  # r50k_base is not bundled


def test_counts_match_tiktoken_for_the_models_encoding(estimator: Estimator) -> None:
    text = "Olá! " * 100
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    expected = len(tiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert estimator.estimate(body).prompt == expected + TOKENS_PER_MESSAGE + REPLY_PRIMING


def test_completion_uses_max_completion_tokens_then_max_tokens_then_default(estimator: Estimator) -> None:
    base: dict[str, Any] = {"model": "gpt-4", "messages": [{"role": "user", "content": "oi"}]}
    assert estimator.estimate({**base, "max_completion_tokens": 70, "max_tokens": 90}).completion == 70
    assert estimator.estimate({**base, "max_tokens": 90}).completion == 90
    assert estimator.estimate(base).completion == 400
    assert estimator.estimate({**base, "max_tokens": 0}).completion == 400
    assert estimator.estimate({**base, "max_tokens": "90"}).completion == 400


def test_multimodal_parts_tools_and_names(estimator: Estimator) -> None:
    tools = [{"type": "function", "function": {"name": "clima", "parameters": {"type": "object"}}}]
    body = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "Você é um assistente."},
            {
                "role": "user",
                "name": "maria",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                ],
            },
        ],
        "tools": tools,
        "max_tokens": 10,
    }
    result = estimator.estimate(body)
    text = cl100k("Você é um assistente.") + cl100k(QUESTION)
    overhead = 2 * TOKENS_PER_MESSAGE + REPLY_PRIMING + 1
    assert result.prompt > text + IMAGE_TOKENS + IMAGE_TOKENS_LOW + overhead  # + the tools' JSON


@pytest.mark.parametrize(
    ("body", "call_type"),
    [
        ({"model": "text-embedding-3-small", "input": ["um texto", "outro texto"]}, "aembedding"),
        ({"model": "gpt-4o", "input": "Resuma isto.", "instructions": "Seja breve.", "max_output_tokens": 30}, ""),
        ({"model": "gpt-3.5-turbo-instruct", "prompt": "Era uma vez", "max_tokens": 30}, "atext_completion"),
        (
            {
                "model": "claude-sonnet-4-5",
                "system": [{"type": "text", "text": "Seja breve."}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Oi"}]}],
                "max_tokens": 30,
            },
            "anthropic_messages",
        ),
    ],
)
def test_other_request_shapes_are_counted(estimator: Estimator, body: dict[str, Any], call_type: str) -> None:
    result = estimator.estimate(body, call_type=call_type)
    assert result.exact and result.prompt > 0
    assert result.completion == (0 if call_type == "aembedding" else 30)


def test_any_failure_gives_the_fallback(estimator: Estimator, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_model: str) -> Any:
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr(estimate_module, "encoding_for", broken)
    result = estimator.estimate({"model": "gpt-4", "messages": [{"role": "user", "content": "oi"}]})
    assert (result.total, result.exact) == (100, False)


def test_fallback_when_no_encoding_file_can_be_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # An empty TIKTOKEN_CACHE_DIR: nothing loads, nothing is downloaded, the fallback is used.
    monkeypatch.setattr(estimate_module, "_encodings", {})
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", lambda *_: (_ for _ in ()).throw(AssertionError("network")))
    estimator = Estimator(Settings(fallback_estimate=123))
    result = estimator.estimate({"model": "gpt-4", "messages": [{"role": "user", "content": "oi"}]})
    assert (result.total, result.exact) == (123, False)


def test_malformed_bodies_never_raise(estimator: Estimator) -> None:
    for body in (
        {},
        {"messages": "oi"},
        {"messages": [None, 3, {"content": {"weird": True}}]},
        {"model": None, "messages": [{"role": "user", "content": None}]},
    ):
        assert estimator.estimate(body).total >= 1


def test_estimate_is_capped_at_max_request_tokens() -> None:
    estimator = Estimator(Settings(max_request_tokens=1000))
    result = estimator.estimate({"model": "gpt-4", "messages": [{"role": "user", "content": "oi"}], "max_tokens": 5000})
    assert result.total == 1000


def test_repeated_history_is_counted_once(estimator: Estimator, monkeypatch: pytest.MonkeyPatch) -> None:
    history = [{"role": "user", "content": f"mensagem número {i} " * 20} for i in range(30)]
    estimator.estimate({"model": "gpt-4", "messages": history})
    calls: list[str] = []
    encoding = encoding_for("gpt-4")

    class Spy:
        name = encoding.name

        def encode_ordinary(self, text: str) -> list[int]:
            calls.append(text)
            return list(encoding.encode_ordinary(text))

    monkeypatch.setattr(estimate_module, "encoding_for", lambda _model: Spy())
    turn = [*history, {"role": "user", "content": "e agora?"}]
    estimator.estimate({"model": "gpt-4", "messages": turn})
    assert calls == ["e agora?"]


def test_very_long_text_is_extrapolated_not_fully_tokenized(estimator: Estimator) -> None:
    text = "palavra " * 100_000  # 800k characters
    result = estimator.estimate({"model": "gpt-4", "messages": [{"role": "user", "content": text}]})
    exact = cl100k(text)
    assert abs(result.prompt - exact) <= exact * 0.01 + 10
