"""Worker processes: take a segment, run the model, return the result."""
