"""The pure core: plain functions over plain data, no I/O (an import-linter contract).

``keys`` (item → primary key), ``dedupe`` (new versus seen, the flood guard), ``retry``
(delivery retries, poll backoff, the sustained-failure pause), ``signing`` (Standard
Webhooks HMAC), ``events`` (event ids, the webhook body and headers), ``filters`` (which
events a command is about), ``durations`` (``"5m"`` → seconds), ``exact_json`` (JSON
read and written with every value exact, and what a body costs to parse).
"""
