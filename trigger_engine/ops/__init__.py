"""What operators see: ``logs`` (event names, context, redaction), ``metrics``
(Prometheus), ``http_api`` (``/healthz`` and ``/metrics``)."""
