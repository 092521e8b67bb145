"""The host system: libc, sd_notify, malloc tuning, file-system helpers, import trims."""
