"""The end-to-end report: one self-contained HTML page of every figure and metric."""
