"""Human labels for captured frames: the queue, the labels, and exports into training data."""
