"""The read-only audit service: a FastAPI app over the runs' results and ledgers, with
bearer tokens stored only as hashes (``fedshield audit serve``)."""
