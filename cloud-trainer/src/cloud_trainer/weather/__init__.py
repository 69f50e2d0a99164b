"""Weather-station forecaster (rain in 4 h): ingestion, labels, training, evaluation, CLI."""
