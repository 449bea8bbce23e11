"""Segmenter: event-driven, real-time customer segmentation on Kafka and Redis.

Importing this package has no side effects: no app, no connections, no configuration read.
"""

__version__ = "0.1.0"
