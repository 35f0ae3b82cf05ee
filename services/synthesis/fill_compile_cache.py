"""Fill GLIGEN's compiled-artifact cache once, on a machine like the workers' (same GPU model, same torch)
where the cache folder is writable (the workers' models volume is read-only in compose and Kubernetes):

    DREAMMASK_MODELS_DIR=/models DREAMMASK_GLIGEN_BATCH_SIZE=16 python -m dreammask.services.synthesis.fill_compile_cache

A module of its own because it loads the renderer, which imports `compilation`."""

from __future__ import annotations

import json

from .settings import SynthesisSettings


def main(argv=None) -> int:
    """Fill the artifact cache once, on a machine like the workers' (same GPU model, same torch) where
    the cache folder is writable: load GLIGEN as a worker does, compile, write the entry, print what
    happened. `python -m dreammask.services.synthesis.fill_compile_cache` with the workers' DREAMMASK_* settings."""
    import argparse

    from .backends.gligen import GligenRenderer

    argparse.ArgumentParser(description=main.__doc__.split("\n")[0]).parse_args(argv)
    synthesis = SynthesisSettings().model_copy(update={"gligen_torch_compile": True,
                                                       "gligen_compile_blocking_limit_s": float("inf")})
    renderer = GligenRenderer.from_settings(synthesis)
    try:
        renderer.warmup()
        status = renderer.compile_status
    finally:
        renderer.close()
    print(json.dumps(status, indent=1))
    ok = status.get("state") == "serving" and (status.get("cache") == "hit" or status.get("cache_saved"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
