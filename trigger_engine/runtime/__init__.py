"""The running process: ``daemon`` is the composition root (start, ``run --once``,
reload, signals, shutdown), ``jobs`` lays out the APScheduler schedule."""
