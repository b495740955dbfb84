"""Group importance estimators and per-layer normalizers (registered in ``gradprune.plugins``)."""
