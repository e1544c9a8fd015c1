"""Stage 1: the tri-axial 2D vessel-box model and ROI extraction (MODEL_SPEC 3)."""
