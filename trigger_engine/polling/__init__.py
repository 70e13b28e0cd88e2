"""Polling: ``source`` fetches a trigger's items from the Meet Alfred API, within a
``deadline`` kept by its ``transport`` and the limits of ``body`` (size, decompression
ratio, parse cost); ``poller`` runs one poll (source → keys → store), ``backfill`` fires
what a first poll only remembered, ``gc_pause`` holds the garbage collector while a poll
builds large data."""
