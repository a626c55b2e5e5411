"""The ops: one module each, holding its reference, its custom op and its dispatch."""
