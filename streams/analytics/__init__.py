"""Segment intelligence: size history, overlap, performance against a holdout, the MIDAS report.

Everything here reads what the stream already wrote (member sets, states, the hourly size
history); nothing runs on the hot path except the history's counters, which the batch commit
writes with the memberships.
"""
