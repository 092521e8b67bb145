"""The configuration: models, checks, hardware profiles, provisioning."""
