"""The journal: per link, an append-only, hash-chained record of everything that crossed.

A party that later disputes what was agreed needs evidence beyond its own account. Each entry says
what crossed, when, from which side and ids to which, under which rules (a hash of the link's
rules), with a SHA-256 of the content and the previous entry's hash, so that removing, inserting,
editing or reordering any entry breaks the chain. `chain` is the pure part (canonical form,
sealing, checking), `bundle` the self-contained export that `crosslink journal verify` checks
offline, with no Redis or Planfix, and `store` the durable, queryable store (SQLAlchemy: SQLite
by default, PostgreSQL when CROSSLINK_JOURNAL_URL names one; migrations by Alembic).

Beside the chain, the versions of each link's rules and who approved them (docs/mapping.md):
`versions` stores them, `approvals` decides (pure) which sides a change needs and which version
is in force, `rules` rebuilds the Link in force from a version, and `rules_diff` (with its words
in `diff_texts`) tells a change in sentences people can approve.
"""
