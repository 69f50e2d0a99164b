"""The agent process: source → model → outbox → broker, telemetry, commands, supervision."""
