"""Async chat client for any OpenAI-compatible server (vLLM's `vllm serve` in deployment).

Only `POST {base_url}/chat/completions` is used. What it adds over a bare HTTP call:
- bounded concurrency (a semaphore held only while a request is in flight, not while backing off);
- a deadline per request, retries with exponential backoff and jitter on 429, 5xx, timeouts and
  connection errors, honouring `Retry-After`;
- structured output: `response_format = {"type": "json_schema", ...}` (vLLM turns it into guided
  decoding); in "auto" mode a server that rejects it with a 400 is remembered and asked again with the
  schema in the prompt instead;
- a hard cap on the size of what it reads, and an envelope check: the content comes back as a string or
  the call fails with a reason. The content itself is parsed by `parsing.py`, never here.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .parsing import LLMOutputError, LLMRequestRejected, LLMUnavailableError, excerpt

Message = dict[str, str]
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class ChatRequest:
    # Messages for this request; the flag says whether the schema must be spelled out in the prompt
    # (the server will not enforce it).
    messages: Callable[[bool], list[Message]]
    schema: dict
    schema_name: str
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass
class ChatReply:
    content: str
    finish_reason: str | None
    structured: bool  # the server was asked to enforce the schema
    attempts: int
    seconds: float


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _StructuredRejected(Exception):
    pass


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_concurrency: int = 16,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        structured_output: str = "auto",
        max_response_bytes: int = 1_000_000,
    ):
        if structured_output not in ("auto", "json_schema", "prompt"):
            raise ValueError("structured_output must be 'auto', 'json_schema' or 'prompt'")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.structured_output = structured_output
        self.max_response_bytes = max_response_bytes
        self._structured_ok = structured_output != "prompt"
        self._semaphore = asyncio.Semaphore(max_concurrency)
        # One single-connection httpx client per request in flight, kept between requests: httpcore's pool
        # scans all its connections on every request, which costs more CPU than the request itself at
        # dozens of connections; many one-connection pools keep that scan trivial.
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._headers = {"Authorization": f"Bearer {api_key}"}
        # httpx builds a fresh SSL context (tens of ms) per client unless given one: build it once.
        self._ssl = _ssl_context()
        self.stats = {"requests": 0, "retries": 0, "fallbacks": 0}

    @classmethod
    def from_settings(cls, s) -> ChatClient:
        return cls(
            s.llm_base_url,
            s.llm_model,
            s.llm_api_key.get_secret_value(),
            timeout_s=s.llm_timeout_s,
            connect_timeout_s=s.llm_connect_timeout_s,
            max_concurrency=s.llm_max_concurrency,
            max_retries=s.llm_max_retries,
            backoff_base_s=s.llm_backoff_base_s,
            backoff_max_s=s.llm_backoff_max_s,
            structured_output=s.llm_structured_output,
            max_response_bytes=s.llm_max_response_bytes,
        )

    def _connection(self) -> httpx.AsyncClient:
        if self._idle:
            return self._idle.pop()
        http = httpx.AsyncClient(
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers=self._headers,
            verify=self._ssl,
            trust_env=False,  # an HTTP(S)_PROXY meant for the internet must not capture the in-cluster call
        )
        self._all.append(http)
        return http

    async def aclose(self) -> None:
        for http in self._all:
            await http.aclose()
        self._all.clear()
        self._idle.clear()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    @property
    def structured_supported(self) -> bool:
        return self._structured_ok

    def _payload(self, req: ChatRequest, structured: bool) -> dict:
        payload = {
            "model": self.model,
            "messages": req.messages(not structured),
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_tokens,
        }
        if req.seed is not None:
            payload["seed"] = int(req.seed) % (2**31)
        if structured:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": req.schema, "strict": True},
            }
        return payload

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * (2**attempt)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    async def chat(self, req: ChatRequest) -> ChatReply:
        """One completion; raises LLMUnavailableError after the retries, LLMRequestRejected for a request
        the server refuses (bad key, unknown model), LLMOutputError for an unusable envelope."""
        t0 = time.perf_counter()
        last = "no attempt made"
        attempt = 0
        while attempt <= self.max_retries:
            structured = self._structured_ok
            try:
                async with self._semaphore:
                    self.stats["requests"] += 1
                    http = self._connection()
                    try:
                        content, finish = await asyncio.wait_for(
                            self._post(http, self._payload(req, structured)), self.timeout_s
                        )
                    finally:
                        self._idle.append(http)
                return ChatReply(content, finish, structured, attempt + 1, time.perf_counter() - t0)
            except _StructuredRejected as e:
                # Not a retry: the same request once more, with the schema in the prompt instead.
                self._structured_ok = False
                self.stats["fallbacks"] += 1
                last = str(e)
                continue
            except _Retryable as e:
                last, retry_after = str(e), e.retry_after
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last, retry_after = f"no complete reply within {self.timeout_s:g} s", None
            except httpx.TransportError as e:
                last, retry_after = f"connection failed ({type(e).__name__}: {e})", None
            if attempt == self.max_retries:
                break
            self.stats["retries"] += 1
            await asyncio.sleep(self._backoff(attempt, retry_after))
            attempt += 1
        raise LLMUnavailableError(
            f"LLM server {self.base_url} failed {attempt + 1} attempt(s); last error: {last}"
        )

    async def _post(self, http: httpx.AsyncClient, payload: dict) -> tuple[str, str | None]:
        structured = "response_format" in payload
        async with http.stream("POST", f"{self.base_url}/chat/completions", json=payload) as resp:
            body = bytearray()
            limit = self.max_response_bytes if resp.status_code == 200 else 4096
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    if resp.status_code == 200:
                        raise LLMOutputError(
                            f"reply from {self.base_url} exceeds {self.max_response_bytes} bytes; refused"
                        )
                    break
        status = resp.status_code
        text = body[:4096].decode("utf-8", "replace")
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {excerpt(text, 200)}", _retry_after(resp.headers.get("retry-after")))
        if status == 400 and structured and self.structured_output == "auto":
            raise _StructuredRejected(f"server rejected response_format (HTTP 400: {excerpt(text, 200)})")
        if status in (401, 403):
            raise LLMRequestRejected(
                f"LLM server {self.base_url} refused the API key (HTTP {status}); set DREAMMASK_LLM_API_KEY"
            )
        if status == 404:
            raise LLMRequestRejected(
                f"LLM server {self.base_url} answered 404 for model {self.model!r}: check DREAMMASK_LLM_BASE_URL "
                f"(it ends in /v1) and DREAMMASK_LLM_MODEL (the served model name); server said {excerpt(text, 200)}"
            )
        if status != 200:
            raise LLMRequestRejected(f"LLM server {self.base_url} refused the request (HTTP {status}): {excerpt(text, 300)}")
        try:
            env = json.loads(bytes(body))
            choice = env["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMOutputError(f"reply is not an OpenAI chat completion: {excerpt(text)}") from None
        if not isinstance(content, str):
            raise LLMOutputError("reply has no text content (choices[0].message.content is not a string)")
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        return content, finish if isinstance(finish, str) else None


def _ssl_context():
    import ssl

    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
