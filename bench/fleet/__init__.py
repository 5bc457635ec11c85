"""Fleet sweeps: a sweep split into shards (one engine configuration on one hardware type),
each run on its own machine by a backend (local processes, Ray, SkyPilot) and published to
the shared store; the store says which shards are done (docs/fleet.md).

    shards.py      sweep -> Fleet of Shards (deterministic ids)
    state.py       the fleet's objects in the store; done / running / failed / missing
    partial.py     a run folder mirrored to the store after every finished point, and restored
    shard.py       what runs on the machine: restore, `bench sweep --config`, sync, upload
    control.py     plan, launch (only what is not done), status, logs, cancel
    backends/      local, ray, skypilot behind one protocol (backends/base.py)

Nothing here imports ray, sky or s3fs at module level.
"""
