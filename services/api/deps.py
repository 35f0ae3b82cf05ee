"""FastAPI dependencies: settings, runtime (storage, Redis, dispatcher) and the caller's tenant."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dreammask.shared.runtime import Runtime
from dreammask.shared.settings import Settings

from . import throttle

_bearer = HTTPBearer(auto_error=False, description="API key (DREAMMASK_API_KEYS / DREAMMASK_API_KEYS_FILE)")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_runtime_dep(request: Request) -> Runtime:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]
# Where the gate leaves the tenant it authenticated, in the request's scope state.
AUTHENTICATED_TENANT = "dreammask_tenant"


def tenant_for_authorization(settings: Settings, authorization: str | None) -> str | None:
    """The tenant whose key is in an `Authorization: Bearer <key>` header value, or None."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    tenant = None
    # Compare against every key in constant time, so timing tells nothing about which keys exist.
    for key, t in settings.tenant_keys().items():
        if hmac.compare_digest(key.encode(), given.encode("utf-8", "surrogateescape")):
            tenant = t
    return tenant


UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <key>'"


def authenticate(rt, settings: Settings, scope, authorization: str | None, where: str = "bearer") -> str:
    """The tenant of a request's bearer key, throttled (services/api/throttle.py): 429 while its address is
    locked, 401 for no key or a wrong one (a wrong one is counted, and is a 429 once its address or its
    key prefix is locked)."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    addr = throttle.client_addr(scope)
    try:
        throttle.check(rt.redis, addr, where)
    except throttle.Throttled as e:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, e.detail,
                            headers={"Retry-After": str(e.retry_after_s)}) from None
    tenant = tenant_for_authorization(settings, authorization)
    if tenant is None:
        locked = throttle.failed(rt.redis, settings, addr, given, where, scope.get("path", ""))
        if locked:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, throttle.Throttled(locked).detail,
                                headers={"Retry-After": str(locked)})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
    return tenant


def get_tenant(
    request: Request,
    settings: SettingsDep,
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    # A request with a body was authenticated (and throttled) before its body was read (hardening.py).
    known = request.scope.get("state", {}).get(AUTHENTICATED_TENANT)
    if known:
        return known
    return authenticate(rt, settings, request.scope, request.headers.get("authorization"))


TenantDep = Annotated[str, Depends(get_tenant)]


def base_url(request: Request, settings: Settings) -> str:
    """Where links point: DREAMMASK_PUBLIC_BASE_URL, else the request's own Host, which the trusted-host
    check (hosts.py) already found in DREAMMASK_ALLOWED_HOSTS."""
    return (settings.public_base_url or str(request.base_url)).rstrip("/")
