"""Names of the report's per-object outputs, which the web page and the export read."""

ANOMALIES = "anomalies.csv"  # every object's anomaly rank and scores
TRUST = "trust.npz"  # every object's trust score (surveys with redshifts)
