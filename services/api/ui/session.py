"""UI sessions and CSRF.

Logging in with an API key creates a session in Redis (random id, 12 h); the browser holds only the session
id, in a cookie marked HttpOnly (scripts cannot read it) and SameSite=Strict (other sites cannot send it).
The session keeps the tenant, a reviewer name, a hash of the key (so a key removed from the configuration
ends its sessions) and a CSRF token. Every state change (POST) must carry that token, as the form field
`csrf_token` or the header `X-CSRF-Token`; the login form itself is protected by a double-submit token in
a short-lived cookie of its own, which is also single-use (spent in Redis by the attempt that posts it).
Failed logins are counted and throttled like failed bearer keys (services/api/throttle.py)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import HTTPException, Request, status

from dreammask.shared.runtime import Runtime
from dreammask.shared.settings import Settings

from ..reviewing import who

SESSION_COOKIE = "dm_session"
LOGIN_CSRF_COOKIE = "dm_login_csrf"
SESSION_TTL_S = 12 * 3600
LOGIN_CSRF_TTL_S = 1800


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _rkey(sid: str) -> str:
    return f"dreammask:ui:session:{sid}"


class Session:
    def __init__(self, sid: str, tenant: str, reviewer: str, csrf: str):
        self.sid, self.tenant, self.reviewer, self.csrf = sid, tenant, reviewer, csrf


def tenant_for_key(settings: Settings, key: str) -> str | None:
    found = None
    for k, t in settings.tenant_keys().items():
        if hmac.compare_digest(k.encode(), key.encode()):
            found = t
    return found


def create(rt: Runtime, settings: Settings, key: str) -> Session | None:
    tenant = tenant_for_key(settings, key) if key else None
    if tenant is None:
        return None
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    rk = _rkey(sid)
    rt.redis.hset(rk, mapping={"tenant": tenant, "reviewer": who(tenant, key), "csrf": csrf,
                               "key_hash": _key_hash(key)})
    rt.redis.expire(rk, SESSION_TTL_S)
    return Session(sid, tenant, who(tenant, key), csrf)


def load(rt: Runtime, settings: Settings, request: Request) -> Session | None:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid or len(sid) > 100:
        return None
    data = {k.decode(): v.decode() for k, v in rt.redis.hgetall(_rkey(sid)).items()}
    if not data:
        return None
    if not any(hmac.compare_digest(_key_hash(k), data["key_hash"]) for k in settings.tenant_keys()):
        rt.redis.delete(_rkey(sid))
        return None
    return Session(sid, data["tenant"], data["reviewer"], data["csrf"])


def destroy(rt: Runtime, sid: str) -> None:
    rt.redis.delete(_rkey(sid))


def check_csrf(expected: str | None, given: str | None) -> None:
    if (not isinstance(expected, str) or not isinstance(given, str) or not expected or not given
            or not hmac.compare_digest(expected.encode("utf-8", "surrogateescape"),
                                       given.encode("utf-8", "surrogateescape"))):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "CSRF token missing or wrong: reload the page and try again")


def _login_csrf_key(token: str) -> str:
    return f"dreammask:ui:login-csrf:{hashlib.sha256(token.encode()).hexdigest()}"


def issue_login_csrf(rt: Runtime) -> str:
    """A login form's token: valid once, for LOGIN_CSRF_TTL_S (kept in Redis until used)."""
    token = secrets.token_urlsafe(24)
    rt.redis.set(_login_csrf_key(token), 1, ex=LOGIN_CSRF_TTL_S)
    return token


def use_login_csrf(rt: Runtime, cookie: str | None, given: str | None) -> None:
    """The login form's double-submit check, and the token spent: a second post of the same form is a 403
    (each attempt needs a fresh form, so replaying one form does not make guesses cheaper)."""
    check_csrf(cookie, given)
    if not rt.redis.delete(_login_csrf_key(given)):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "this login form was already used or has expired: reload the page and try again")


def cookie_args(request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https", "path": "/ui"}
