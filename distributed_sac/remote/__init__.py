"""The Ray layer: thin remote wrappers around the pure classes, and the driver that wires them."""
