"""Helpers shared by the tests: real brokers, real media, real servers, the real CLI.

Import them absolutely, e.g. ``from tests.support.broker import Broker``. Fixtures
built on them are in ``tests/conftest.py``.
"""
