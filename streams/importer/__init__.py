"""``segmenter import``: a shop's history into the live namespace, quietly and fast
(see docs/import.md)."""
