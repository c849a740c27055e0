"""Package data (spine.bundled.weights): the bundled model weights; see README.md."""
