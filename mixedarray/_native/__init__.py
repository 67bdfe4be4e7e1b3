"""Optional fast paths, each taken by the same public function and tested against the
standard-API reference in :mod:`mixedarray.projections`, which stays the source of truth."""
