"""The local web app over a run root (ray-pipeline ui): Control Center and Model Explorer."""
