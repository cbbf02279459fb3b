"""The Celery app and its tasks, the pure decision modules, idempotency and locks."""
