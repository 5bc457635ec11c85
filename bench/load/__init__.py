"""Load generation: workloads, arrival processes and the streaming client."""
