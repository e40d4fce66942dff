"""Using a released model: batch scoring of files, the HTTP API with micro-batching, the prediction cache."""
