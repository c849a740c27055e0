"""Package data (spine.bundled.examples): the example scan; see README.md."""
