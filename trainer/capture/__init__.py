"""Capture: hooks and batched on-device statistics (needs torch)."""
