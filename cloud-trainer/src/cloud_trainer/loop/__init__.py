"""The closed loop on one machine: stack, devices, drift → retrain → gate → rollout → update."""
