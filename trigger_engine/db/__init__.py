"""The database layer: the only code that speaks SQL, on SQLite and PostgreSQL alike.

``store.Store`` is the entry point: a ``Database`` (``engine``: connections, transactions,
SQLite's pragmas and file lock) with one repository per aggregate: ``polls`` (poll state,
leases, a poll's outbox write), ``seen`` (the dedupe set), ``events``, ``deliveries``
(claims, attempts, replay), ``sinks``, ``nodes``. ``schema`` declares the tables (the
migrations must match it), ``codecs`` the one time conversion, ``queries`` the raw
hot-path statements, ``migrate`` applies the Alembic migrations shipped in the package.
"""
