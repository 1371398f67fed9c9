"""The fast path in Cython (`.pyx` with `.pxd` interfaces) and its Python side (`fastpath.py`)."""
