"""Package data (spine.bundled.configs): the config presets (TOML)."""
