"""Talking to the fleet: the MQTT link, publisher, status, telemetry, commands, schemas."""
