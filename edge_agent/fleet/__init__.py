"""The fleet dashboard: a read-only web page of every device on a broker."""
