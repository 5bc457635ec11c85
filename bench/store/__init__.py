"""Store: the shared, fsspec-backed store of published runs and the cost-model table.

    from bench.store import upload, pull, ls, Store
"""

from bench.store.publish import (  # noqa: F401
    MANIFEST_FILE,
    PreparedRun,
    manifest_bytes,
    prepare,
    run_models,
    sha256_hex,
)
from bench.store.pull import default_cache_dir, ls, pull  # noqa: F401
from bench.store.store import (  # noqa: F401
    RUNS_DIR,
    STAGING_DIR,
    Store,
    Uploaded,
    storage_options_for,
    upload,
)
