"""Token estimate of a request before it runs (SPEC F3): prompt tokens + expected completion.

Prompt tokens are counted with tiktoken, using the model's encoding when tiktoken knows the model
and cl100k_base otherwise. Only the encodings bundled with LiteLLM are ever loaded, from files on
disk whose checksum is verified first, so counting never touches the network. Any failure gives
the configured fallback (100 tokens by default).

Counting is the hot path's only CPU-heavy step, so counts are memoized per text: a chat resends
its whole history on every turn, and only the new messages are tokenized.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solaris_tokens.settings import Settings

log = logging.getLogger("solaris_tokens.estimate")

DEFAULT_ENCODING = "cl100k_base"
# The encodings LiteLLM ships (litellm/litellm_core_utils/tokenizers), by the URL tiktoken would
# download them from (the file name is its sha1) and the sha256 tiktoken expects.
_BUNDLED: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "p50k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
}
# OpenAI's chat format: every message costs a few tokens beyond its content, and the reply is primed.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 765  # one high-detail 1024×1024 image
IMAGE_TOKENS_LOW = 85
_EXACT_CHARS = 200_000  # longer texts: the first part is counted, the rest extrapolated
_COUNT_CACHE_SIZE = 8192
_COMPLETION_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens", "max_tokens_to_sample")
_TEXT_FIELDS = ("system", "instructions", "prompt", "input", "contents")  # besides `messages`
_JSON_FIELDS = ("tools", "functions", "response_format")
_EMBEDDING_CALLS = frozenset({"embedding", "aembedding"})


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt: int
    completion: int
    total: int
    exact: bool  # False when the fallback was used


class Estimator:
    def __init__(self, settings: Settings) -> None:
        self.fallback = settings.fallback_estimate
        self.default_completion = settings.default_completion_estimate
        self.cap = settings.max_request_tokens
        # (encoding, hash, length) of a text -> its token count; insertion-ordered, oldest evicted first.
        self._counts: dict[tuple[str, int, int], int] = {}

    def estimate(self, request: Mapping[str, Any], *, call_type: str = "") -> Estimate:
        """Estimate a request body (chat, text completion, embeddings, responses, Anthropic messages)."""
        try:
            encoding = encoding_for(str(request.get("model") or ""))
            if encoding is None:
                raise LookupError("no offline tiktoken encoding could be loaded")
            prompt = self._prompt_tokens(request, encoding)
            completion = 0 if call_type in _EMBEDDING_CALLS else self._completion_tokens(request)
        except Exception as exc:
            log.debug("estimate failed, using the fallback: %r", exc)
            return Estimate(0, 0, self.fallback, exact=False)
        total = min(max(prompt + completion, 1), self.cap)
        return Estimate(prompt, completion, total, exact=True)

    # --- prompt -------------------------------------------------------------------------------

    def _prompt_tokens(self, request: Mapping[str, Any], encoding: Any) -> int:
        total = 0
        messages = request.get("messages")
        if isinstance(messages, list):
            total += REPLY_PRIMING
            for message in messages:
                total += TOKENS_PER_MESSAGE
                if isinstance(message, dict | Mapping):
                    if message.get("name"):
                        total += TOKENS_PER_NAME
                    content = message.get("content")
                    if isinstance(content, str):  # the common case, without the generic walk
                        total += self._count_text(content, encoding)
                    elif content is not None:
                        total += self._count_value(content, encoding)
                    tool_calls, function_call = message.get("tool_calls"), message.get("function_call")
                    if tool_calls or function_call:
                        total += self._count_json(tool_calls, encoding) + self._count_json(function_call, encoding)
                else:
                    total += self._count_value(message, encoding)
        for name in _TEXT_FIELDS:
            value = request.get(name)
            if value is not None:
                total += self._count_value(value, encoding)
        for name in _JSON_FIELDS:
            value = request.get(name)
            if value:
                total += self._count_json(value, encoding)
        return total

    def _count_value(self, value: Any, encoding: Any) -> int:
        """Tokens of a content value: a string, a list of parts, or nested items (responses API)."""
        if value is None:
            return 0
        if isinstance(value, str):
            return self._count_text(value, encoding)
        if isinstance(value, int) and not isinstance(value, bool):
            return 1  # a token id (embeddings of pre-tokenized input)
        if isinstance(value, list | tuple | Sequence):
            return sum(self._count_value(item, encoding) for item in value)
        if isinstance(value, dict | Mapping):
            kind = str(value.get("type") or "")
            if kind in ("image_url", "input_image", "image"):
                detail = value.get("detail")
                image = value.get("image_url")
                if isinstance(image, Mapping):
                    detail = image.get("detail", detail)
                return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS
            total = 0
            for key in ("text", "content", "parts", "input", "output", "arguments", "thinking"):
                total += self._count_value(value.get(key), encoding)
            return total
        return 0

    def _count_json(self, value: Any, encoding: Any) -> int:
        if not value:
            return 0
        return self._count_text(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), encoding)

    def _count_text(self, text: str, encoding: Any) -> int:
        if not text:
            return 0
        key = (encoding.name, hash(text), len(text))
        counts = self._counts
        cached = counts.get(key)
        if cached is not None:
            return cached
        if len(text) <= _EXACT_CHARS:
            count = len(encoding.encode_ordinary(text))
        else:
            head = len(encoding.encode_ordinary(text[:_EXACT_CHARS]))
            count = -(-head * len(text) // _EXACT_CHARS)
        counts[key] = count
        if len(counts) > _COUNT_CACHE_SIZE:
            with contextlib.suppress(RuntimeError, StopIteration):  # another thread changed it meanwhile
                counts.pop(next(iter(counts)), None)
        return count

    # --- completion ---------------------------------------------------------------------------

    def _completion_tokens(self, request: Mapping[str, Any]) -> int:
        for name in _COMPLETION_FIELDS:
            value = request.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return self.default_completion


# --- encodings, loaded once per process and only from local files --------------------------------

_encodings: dict[str, Any] = {}
_model_encodings: dict[str, str] = {}
_encodings_lock = threading.Lock()


def bundled_dir() -> Path | None:
    """LiteLLM's directory of tiktoken files, found without importing LiteLLM."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    return directory if directory.is_dir() else None


def _cache_dir() -> Path | None:
    """Where tiktoken will look: the operator's TIKTOKEN_CACHE_DIR, else LiteLLM's bundled files."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    directory = bundled_dir()
    if directory is not None:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)  # what LiteLLM itself does on first use
    return directory


def _load(name: str) -> Any:
    """One encoding from a verified local file; None when the file is absent or corrupt (never downloads)."""
    if name in _encodings:
        return _encodings[name]
    with _encodings_lock:
        if name in _encodings:
            return _encodings[name]
        encoding = None
        try:
            url, sha256 = _BUNDLED[name]
            directory = _cache_dir()
            if directory is not None:
                path = directory / hashlib.sha1(url.encode()).hexdigest()
                if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
                    import tiktoken

                    encoding = tiktoken.get_encoding(name)
                else:
                    log.warning("tiktoken file for %s missing or corrupt in %s", name, directory)
        except Exception:
            log.exception("could not load the %s encoding", name)
        _encodings[name] = encoding
        return encoding


def _encoding_name(model: str) -> str:
    name = _model_encodings.get(model)
    if name is not None:
        return name
    name = DEFAULT_ENCODING
    try:
        from tiktoken.model import encoding_name_for_model

        bare = model.rsplit("/", 1)[-1]
        found = encoding_name_for_model(bare)
        if found in _BUNDLED:
            name = found
    except Exception:
        name = DEFAULT_ENCODING
    if len(_model_encodings) < 10_000:
        _model_encodings[model] = name
    return name


def encoding_for(model: str) -> Any:
    """The tiktoken encoding for a model name (provider prefix allowed), falling back to cl100k_base."""
    return _load(_encoding_name(model)) or _load(DEFAULT_ENCODING)


def warm_up() -> None:
    """Load every bundled encoding now (a fraction of a second each) so no request pays for it."""
    for name in _BUNDLED:
        _load(name)
