"""The on-demand WebRTC live view."""
