"""Renderers: turn the stream of run events into what the operator reads; chosen by --format."""
