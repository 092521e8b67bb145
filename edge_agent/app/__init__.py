"""The running agent: daemon wiring, supervision, reload, recovery, demo, doctor."""
