"""Device configuration: pydantic models for a device YAML and their validation."""
