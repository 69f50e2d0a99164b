"""balena-cli wrappers: the exact commands for fleets, OS images, flashing, pushes and tags."""
