"""Per-device identities for the broker: passwords, certificates, ACL, device bundles."""
