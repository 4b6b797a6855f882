"""Where finished chunks live: the Zarr tile store with per-chunk done markers and spilled
blend hand-overs, so a killed run resumes. May import the foundation and geometry only.
"""
