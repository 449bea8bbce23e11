"""Per-customer state: the data model, applying events, and the rule engine's view of it."""
