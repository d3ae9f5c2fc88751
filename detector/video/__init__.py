"""Video: reading and writing (PyAV), tracking, drawing, and the detect-track-draw pipeline."""
