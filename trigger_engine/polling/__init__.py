"""Polling: ``source`` fetches a trigger's items from the Meet Alfred API, ``poller`` runs
one poll (source → keys → store), ``backfill`` fires what a first poll only remembered,
``gc_pause`` holds the garbage collector while a poll builds large data."""
