"""The model audit report: facts from the stores, rendered as one self-contained HTML file."""
