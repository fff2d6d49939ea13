"""TAVSE models: the audio U-Net, the visual encoders, their time-aligned fusion, and the model."""

from tavse.models.tavse import TAVSE, draw_stream_keep, parameter_counts

__all__ = ["TAVSE", "draw_stream_keep", "parameter_counts"]
