"""Research around the product: the cross-run report, the GPU script, the speed benchmark.

Imports the product (``cxr``); the product never imports this package, and it is not
shipped (not in the wheel, not in the Bento)."""
