"""Back ends: standard integer ONNX, and DIANA (DORY / HTVM)."""
