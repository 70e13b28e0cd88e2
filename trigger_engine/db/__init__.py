"""The database layer: the only code that speaks SQL, on SQLite and PostgreSQL alike.

``store.Store`` is the entry point: a ``Database`` (``engine``: connections, transactions,
SQLite's pragmas and file lock) with one repository per aggregate: ``polls`` (poll state,
leases, a poll's write), ``seen`` (the dedupe set), ``events``, ``deliveries`` (claims,
attempts, replay), ``sinks``, ``nodes``, ``quarantine`` (items set aside). ``outbox``
writes a poll's items, one at a time when the database refuses the batch; ``schema``
declares the tables (the migrations must match it), ``codecs`` the one time conversion,
``queries`` the raw hot-path statements, ``migrate`` applies the Alembic migrations
shipped in the package.
"""
