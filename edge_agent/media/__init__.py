"""Media files and sources: probing, remuxing, audio, camera and test sources."""
