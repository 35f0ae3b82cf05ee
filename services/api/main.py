"""The DreamMask API: `uvicorn dreammask.services.api.main:app`."""

from __future__ import annotations

import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dreammask.shared.runtime import Runtime, build_runtime
from dreammask.shared.settings import Settings, get_settings

from . import hardening, quotas
from .hosts import TrustedHostMiddleware
from .metrics import metrics_middleware
from .routes import datasets, deletion, health, jobs, rerender, reviews, ui, ui_loops

log = logging.getLogger("dreammask.api")

# Routers of optional services, included when their code is installed in this image.
OPTIONAL_ROUTERS = ("dreammask.services.api.routes.trainings", "dreammask.services.api.routes.loops")


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = build_runtime(settings)
        if not settings.tenant_keys():
            log.warning("no API keys configured (DREAMMASK_API_KEYS): every request will get 401")
        yield

    app = FastAPI(
        title="DreamMask",
        version="0.1.0",
        description="Synthetic data for open-vocabulary segmentation: synthesis jobs, datasets, trainings.",
        lifespan=lifespan,
        docs_url=None,  # served from the package's own assets (docs_pages), not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.middleware("http")(metrics_middleware)
    hardening.install(app, settings)
    quotas.install(app)
    app.add_middleware(TrustedHostMiddleware, settings=settings)
    # Outermost: oversized headers are refused before anything (the host check included) reads them.
    app.add_middleware(hardening.HeaderLimitMiddleware, settings=settings)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(rerender.router)
    app.include_router(datasets.router)
    app.include_router(reviews.router)
    app.include_router(deletion.router)
    app.include_router(ui_loops.router)  # before ui.router, whose last route answers every other /ui page
    app.include_router(ui.router)
    app.include_router(ui.root_router)
    for module in OPTIONAL_ROUTERS:
        try:
            app.include_router(importlib.import_module(module).router)
        except ImportError as e:
            log.info("router %s not included: %s", module, e)
    from . import docs_pages, health_docs  # the OpenAPI pages and the health routes' documented statuses

    docs_pages.install(app)
    health_docs.document(app)
    return app


app = create_app()
