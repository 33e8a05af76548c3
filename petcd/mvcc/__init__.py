"""Multi-version key-value store: revisioned writes on the backend, an
in-memory key index, and the watchable store on top."""
