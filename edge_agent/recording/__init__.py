"""Recording cameras: sessions, segment writing, crash recovery, the packet hub."""
