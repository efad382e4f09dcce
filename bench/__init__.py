"""`make bench`: performance figures, printed and written to bench/results.json.

Figures come from here, never from timing assertions in tests. Every load is bounded in
count and in time, and everything runs on loopback.
"""
