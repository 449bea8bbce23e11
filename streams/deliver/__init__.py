"""``segmenter deliver``: migrations to the tools that act on them.

Each destination (a file in ``SEGMENTER_DESTINATIONS``) has its own consumer group on the
migrations topic, so a slow or failing destination never holds up another. A batch's offsets are
committed only after it was delivered or dead-lettered: nothing is lost, and anything may come
twice (receivers deduplicate by the CloudEvent ``id``).
"""
