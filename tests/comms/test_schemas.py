"""The published JSON Schemas match the pydantic models (regenerate with --write)."""

from __future__ import annotations

from edge_agent.comms.schemas import MODELS, SCHEMA_DIR, drift


def test_schemas_have_not_drifted() -> None:
    assert drift() == []


def test_every_payload_has_a_schema_file() -> None:
    assert {p.name for p in SCHEMA_DIR.glob("*.schema.json")} >= {
        f"{name}.schema.json" for name in MODELS
    }
