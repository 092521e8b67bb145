"""Enforcing retention: janitor, deletion, erasure, holds, clock guard, storage."""
