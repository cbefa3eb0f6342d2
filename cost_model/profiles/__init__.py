"""Bundled cluster presets: one JSON file per preset, named by its file stem."""
