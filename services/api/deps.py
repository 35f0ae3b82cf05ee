"""FastAPI dependencies: settings, runtime (storage, Redis, dispatcher) and the caller's tenant."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dreammask.shared.runtime import Runtime
from dreammask.shared.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="API key (DREAMMASK_API_KEYS / DREAMMASK_API_KEYS_FILE)")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_runtime_dep(request: Request) -> Runtime:
    return request.app.state.runtime


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime_dep)]


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


def get_tenant(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    tenant = None
    if credentials is not None:
        tenant = tenant_for_authorization(settings, f"{credentials.scheme} {credentials.credentials}")
    if tenant is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def base_url(request: Request, settings: Settings) -> str:
    return (settings.public_base_url or str(request.base_url)).rstrip("/")
