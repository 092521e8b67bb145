"""edge-agent: records, tags and enforces retention of video on camera gateways."""

__version__ = "0.1.0"
