"""A Keras 3 Mask R-CNN with Matterport's API, running on the TensorFlow, JAX and torch backends."""

__version__ = "0.1.0"
