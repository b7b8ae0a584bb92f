"""Model packaging for serving: the best global model as an MLflow pyfunc (safetensors weights)."""
