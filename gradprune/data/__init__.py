"""Calibration text sources (registered in ``gradprune.plugins.DATA``) and seeded window draws."""
