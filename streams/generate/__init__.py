"""Synthetic traffic: realistic customers producing Segment-spec events.

- :mod:`streams.generate.personas`: the persona mix (window shopper, bargain hunter, VIP,
  churner, B2B buyer, email enthusiast, cart abandoner), ``Generator`` for live events and
  ``history()`` for an event-time history spanning days.
- :mod:`streams.generate.runner`: ``segmenter generate``, which produces them onto the input
  topic at a given rate (broker from ``SEGMENTER_KAFKA_BOOTSTRAP``, else from the running
  ``segmenter up``'s ``.segmenter/stack.json``).
"""
