"""Side-by-side performance benchmarks; each prints figures and ratios from one run."""
