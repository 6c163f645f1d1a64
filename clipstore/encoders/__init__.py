"""Encoders: open_clip image/text towers and the all-MiniLM-L6-v2 sentence encoder. Loaded lazily, once."""
