"""trigger-engine: self-hosted polling triggers for the Meet Alfred API."""

__version__ = "0.1.0"
