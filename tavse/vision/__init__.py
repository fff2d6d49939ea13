"""Mouth-ROI tracking and the thermal palette."""
