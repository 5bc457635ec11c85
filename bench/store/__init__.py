"""Store: the shared, fsspec-backed store of published runs and the cost-model table.

    from bench.store import upload, pull, ls, Store
"""

from bench.store.store import (  # noqa: F401
    MANIFEST_FILE,
    RUNS_DIR,
    STAGING_DIR,
    PreparedRun,
    Store,
    Uploaded,
    default_cache_dir,
    ls,
    manifest_bytes,
    prepare,
    pull,
    run_models,
    sha256_hex,
    storage_options_for,
    upload,
)
