"""An in-memory Planfix that behaves like the real service, limits and faults included."""
