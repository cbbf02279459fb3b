"""What turns outside events into jobs: the webhook receiver, the reconciliation poller, backfill.

Producers enqueue by task *name* and never import worker code.
"""
