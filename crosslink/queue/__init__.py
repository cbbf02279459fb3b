"""The queue contract: what producers and workers agree on in Redis, spelled once.

Task names, the queue, every Redis key template of the protocol (pending flags, hints, dirty sets,
batch flags, claims, stamps, dead letters), the enqueue that coalesces events into runs, the
claims a batch job takes, and the read-only inspection that `status`, `health` and the metrics
use. Producers and workers both import it, so neither imports the other.
"""
