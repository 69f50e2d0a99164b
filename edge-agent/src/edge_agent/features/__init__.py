"""Feature computation shared by training (cloud) and serving (device): one definition, no skew."""
