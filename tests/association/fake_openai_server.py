"""A scripted OpenAI-compatible chat server on loopback, for the LLM backends' tests and benchmark.

It answers `POST /v1/chat/completions` like vLLM's server does (same envelope, `response_format` with a
`json_schema` accepted or, when told, refused with a 400), with:
- an *auto* mode that reads the INPUT JSON of the prompt the way a model would read it and writes a
  plausible reply (related categories for CNA, a layout with the target for layout requests);
- *scripted* actions for requests that match a rule (task, target, or anything): a given reply text,
  an HTTP status (500, 429 with Retry-After...), a delay (for timeouts), a huge body, a broken envelope;
- a fixed per-request latency and a concurrency limit (requests beyond it queue), for the benchmark;
- a log of the requests it received.

Run in a thread (`FakeOpenAIServer().start()`) or as a process:
`python tests/association/fake_openai_server.py --port 8011 --latency 0.05 --concurrency 8`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import threading
import time
from collections import deque
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

# What the auto mode proposes for a training category: (novel name, reason).
RELATED: dict[str, list[tuple[str, str]]] = {
    "building": [("awning", "awnings shade the shop fronts of buildings"), ("chimney", "chimneys stand on building roofs"),
                 ("balcony", "balconies stick out of building facades")],
    "car": [("traffic cone", "traffic cones stand on roads next to cars"), ("parking meter", "meters line streets where cars park"),
            ("license plate", "every car carries one")],
    "person": [("backpack", "people carry backpacks"), ("sunglasses", "people wear them outdoors")],
    "dog": [("leash", "dogs are walked on a leash"), ("dog bowl", "dogs eat from bowls")],
    "table": [("tablecloth", "tablecloths cover tables"), ("placemat", "placemats lie on dining tables")],
    "tree": [("bird feeder", "bird feeders hang in trees"), ("tree stump", "stumps remain where trees were cut")],
    "cup": [("saucer", "a saucer sits under a cup")],
    "bed": [("headboard", "headboards stand behind beds")],
}
NOISE = ["gramophone", "sextant", "astrolabe", "zither", "theremin", "samovar", "hookah", "loom", "anvil", "kiln",
         "orrery", "metronome", "sundial", "churn", "bellows", "spinning wheel", "yoke", "quern"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _input_of(messages: list[dict]) -> dict:
    """The INPUT JSON document of the last user message (how the prompts carry their data)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            lines = str(m.get("content", "")).splitlines()
            for i, line in enumerate(lines):
                if line.startswith("INPUT") and i + 1 < len(lines):
                    try:
                        return json.loads(lines[i + 1])
                    except ValueError:
                        return {}
            return {}
    return {}


def auto_cna(data: dict, seed: int) -> dict:
    rng = random.Random(seed)
    train = [str(t) for t in data.get("training_categories", [])]
    items = []
    for t in train:
        for name, reason in RELATED.get(t.lower(), [(f"{t.lower()} cover", f"a cover made for a {t}")]):
            items.append({"name": name, "related_to": t, "reason": reason, "visual": True})
    n = int(data.get("how_many", 10))
    items = items[: max(n - 1, 1)]
    # Mild disagreement between rounds: order varies and each round invents one name of its own.
    rng.shuffle(items)
    items.insert(rng.randrange(len(items) + 1),
                 {"name": NOISE[seed % len(NOISE)], "related_to": train[0] if train else "", "reason": "a hunch", "visual": True})
    return {"categories": items}


def auto_layout(data: dict, seed: int) -> dict:
    rng = random.Random(seed)
    target = str(data.get("target", "thing"))
    allowed = [str(a) for a in data.get("allowed_categories", []) if a != target]
    m = max(1, int(data.get("max_objects", 4)))
    w, h = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.5)
    x0, y0 = rng.uniform(0.05, 0.95 - w), rng.uniform(0.3, 0.95 - h)
    objects = [{"category": target, "box": [round(x0, 3), round(y0, 3), round(x0 + w, 3), round(y0 + h, 3)]}]
    for cat in allowed[: min(m - 1, 3)]:
        cw, ch = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.3)
        cx, cy = rng.uniform(0.0, 1 - cw), rng.uniform(0.0, 1 - ch)
        objects.append({"category": cat, "box": [round(cx, 3), round(cy, 3), round(cx + cw, 3), round(cy + ch, 3)]})
    others = ", ".join(o["category"] for o in objects[1:])
    return {"caption": f"a photo of a {target}" + (f" with {others}" if others else ""), "objects": objects}


class Rule:
    def __init__(self, match: dict, actions: list[dict], repeat_last: bool = False):
        self.match = match
        self.actions = deque(actions)
        self.repeat_last = repeat_last

    def matches(self, info: dict) -> bool:
        return all(info.get(k) == v for k, v in self.match.items())

    def next_action(self) -> dict | None:
        if not self.actions:
            return None
        if self.repeat_last and len(self.actions) == 1:
            return self.actions[0]
        return self.actions.popleft()


class ServerState:
    def __init__(self, latency_s: float = 0.0, concurrency: int | None = None, reject_response_format: bool = False):
        self.latency_s = latency_s
        self.concurrency = concurrency
        self.reject_response_format = reject_response_format
        self.rules: list[Rule] = []
        self.log: deque = deque(maxlen=5000)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self._sem: asyncio.Semaphore | None = None

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()
            self.reject_response_format = False
            self.max_in_flight = self.served = 0

    def script(self, match: dict, actions: list[dict], repeat_last: bool = False) -> None:
        with self.lock:
            self.rules.append(Rule(match, actions, repeat_last))

    def action_for(self, info: dict) -> dict | None:
        with self.lock:
            for rule in self.rules:
                if rule.matches(info):
                    action = rule.next_action()
                    if action is not None:
                        return action
        return None


def _completion(content: str, model: str) -> dict:
    return {
        "id": f"chatcmpl-{random.getrandbits(48):x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

    @app.post("/_script")
    async def set_script(request: Request):
        body = await request.json()
        if body.get("reset"):
            state.reset()
        for rule in body.get("rules", []):
            state.script(rule.get("match", {}), rule["actions"], rule.get("repeat_last", False))
        return {"ok": True}

    @app.get("/_requests")
    async def requests_log():
        return {"requests": list(state.log), "max_in_flight": state.max_in_flight, "served": state.served}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if state.concurrency:
            if state._sem is None:
                state._sem = asyncio.Semaphore(state.concurrency)
            async with state._sem:
                return await _handle(request)
        return await _handle(request)

    async def _handle(request: Request):
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await _respond(request)
        finally:
            with state.lock:
                state.in_flight -= 1
                state.served += 1

    async def _respond(request: Request):
        body = await request.json()
        messages = body.get("messages") or []
        data = _input_of(messages)
        seed = int(body.get("seed") or 0)
        info = {"task": data.get("task"), "target": data.get("target"), "seed": seed}
        with state.lock:
            state.log.append({**info, "has_response_format": "response_format" in body,
                              "response_format": body.get("response_format"), "messages": messages,
                              "temperature": body.get("temperature"), "model": body.get("model")})
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        action = state.action_for(info) or {"auto": True}
        if "sleep" in action:
            await asyncio.sleep(float(action["sleep"]))
        if "status" in action:
            headers = {"Retry-After": str(action["retry_after"])} if "retry_after" in action else None
            return JSONResponse({"error": {"message": action.get("body", "scripted error")}},
                                status_code=int(action["status"]), headers=headers)
        if state.reject_response_format and "response_format" in body:
            return JSONResponse({"error": {"message": "response_format is not supported"}}, status_code=400)
        if "raw" in action:
            return Response(content=action["raw"], media_type="application/json")
        if "huge" in action:
            return Response(content=json.dumps(_completion("x" * int(action["huge"]), body.get("model", ""))),
                            media_type="application/json")
        if "reply" in action:
            content = action["reply"]
        elif "reply_json" in action:
            content = json.dumps(action["reply_json"])
        elif data.get("task") == "associate":
            content = json.dumps(auto_cna(data, seed))
        elif data.get("task") == "layout":
            content = json.dumps(auto_layout(data, seed))
        else:
            content = "Hello! How can I help?"
        return JSONResponse(_completion(content, body.get("model", "")))

    return app


class FakeOpenAIServer:
    """The app served by uvicorn in a daemon thread of the calling process."""

    def __init__(self, latency_s: float = 0.0, concurrency: int | None = None, port: int | None = None):
        self.state = ServerState(latency_s, concurrency)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(create_app(self.state), host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.time() + 20
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    # scripting helpers
    def script(self, match: dict, actions: list[dict], repeat_last: bool = False) -> None:
        self.state.script(match, actions, repeat_last)

    def reset(self) -> None:
        """Forget rules and log, after requests of an earlier test that a client gave up on have ended."""
        deadline = time.time() + 10
        while self.state.in_flight and time.time() < deadline:
            time.sleep(0.02)
        self.state.reset()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self.state.log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every completion")
    p.add_argument("--concurrency", type=int, default=0, help="completions served at once (0: unlimited)")
    a = p.parse_args()
    state = ServerState(a.latency, a.concurrency or None)
    uvicorn.run(create_app(state), host="127.0.0.1", port=a.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
