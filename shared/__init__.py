"""What every DreamMask service imports: settings, schemas, object keys, storage, Celery app, registry."""
