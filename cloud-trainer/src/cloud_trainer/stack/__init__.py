"""Local services for the embedded default stack: a Mosquitto broker and an MLflow store."""
