"""Engines run a batch of LLM tasks and hand back a validated value or a failure reason per task.

A task says how to ask (messages, schema, sampling per attempt) and how to check the answer (`accept`,
which raises LLMOutputError on anything unusable). An engine owns the model access: `HTTPEngine` talks to
an OpenAI-compatible server through `ChatClient`, concurrently and bounded; the `transformers` backend's
engine generates in-process in batches. CNA and layout logic is written once against this interface.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .client import ChatClient, ChatRequest, Message
from .parsing import LLMOutputError, LLMRequestRejected, LLMUnavailableError

T = TypeVar("T")


@dataclass
class LLMTask(Generic[T]):
    messages: Callable[[bool], list[Message]]  # schema_in_prompt -> messages
    schema: dict
    schema_name: str
    accept: Callable[[str], T]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int

    def request(self, attempt: int) -> ChatRequest:
        # A retry must sample something else: new seed, and some temperature even for greedy settings.
        return ChatRequest(
            messages=self.messages,
            schema=self.schema,
            schema_name=self.schema_name,
            temperature=self.temperature if attempt == 0 else max(self.temperature, 0.5),
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=(self.seed + 7919 * attempt) % (2**31),
        )


@dataclass
class TaskFailure:
    reason: str
    kind: str  # "output" (replies unusable), "unavailable" (server down), "rejected" (request refused)


class Engine:
    name = "engine"

    def run(self, tasks: list[LLMTask], attempts: int) -> list[Any | TaskFailure]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def summarise_failures(reasons: list[str], attempts: int) -> str:
    last = reasons[-1] if reasons else "no reply"
    if len(reasons) == 1:
        return last
    return f"{len(reasons)} of {attempts} replies were unusable; last: {last}"


class _LoopThread:
    """A private event loop in a daemon thread: the backends' methods are synchronous (a Celery task calls
    them) while the client is async; one loop per process keeps the connection pool warm across calls."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a fork does not carry the thread over
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="llm-client-loop", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result()

    def stop(self) -> None:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None


class HTTPEngine(Engine):
    name = "http"

    def __init__(self, settings):
        self.settings = settings
        self._thread = _LoopThread()
        self._client: ChatClient | None = None
        self._client_pid = None

    def _get_client(self) -> ChatClient:
        # Built inside the loop thread so its semaphore and connections belong to that loop.
        if self._client is None or self._client_pid != os.getpid():
            self._client = ChatClient.from_settings(self.settings)
            self._client_pid = os.getpid()
        return self._client

    @property
    def client(self) -> ChatClient | None:
        return self._client

    def run(self, tasks: list[LLMTask], attempts: int) -> list[Any | TaskFailure]:
        if not tasks:
            return []
        return self._thread.run(self._run_all(tasks, attempts))

    async def _run_all(self, tasks, attempts):
        client = self._get_client()
        return await asyncio.gather(*(self._run_one(client, t, attempts) for t in tasks))

    async def _run_one(self, client: ChatClient, task: LLMTask, attempts: int):
        reasons: list[str] = []
        for attempt in range(attempts):
            try:
                reply = await client.chat(task.request(attempt))
                value = task.accept(reply.content)
                return value
            except LLMOutputError as e:
                reasons.append(str(e))
            except LLMUnavailableError as e:
                return TaskFailure(str(e), "unavailable")
            except LLMRequestRejected as e:
                return TaskFailure(str(e), "rejected")
        return TaskFailure(summarise_failures(reasons, attempts), "output")

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": "openai-compatible",
            "base_url": s.llm_base_url,
            "model": s.llm_model,
            "structured_output": s.llm_structured_output
            if self._client is None or self._client.structured_supported
            else "prompt (server rejected response_format)",
        }

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_pid == os.getpid():
            try:
                self._thread.run(client.aclose())
            except Exception:  # noqa: BLE001 - closing must not fail shutdown
                pass
        self._thread.stop()
