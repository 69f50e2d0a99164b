"""Camera cat/dog model: ingestion, transfer learning, small CNN, export and registry."""
