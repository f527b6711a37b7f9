"""`tunelab ui`: the web UI, a thin layer over the library and the run directory (see app.py)."""
