"""Delivery: ``dispatcher`` claims due deliveries ahead, runs attempts within each sink's
``max_in_flight`` and records outcomes in batches; ``attempt`` makes one signed POST and
decides what follows it."""
