"""Run: set up this machine, execute a plan (engine starts, load points, telemetry), write
every finished point before the next; provenance of the run."""
