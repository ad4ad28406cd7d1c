"""Golden loss traces of the tiny configs (README.md, "Golden loss traces")."""
