"""Data: the Kaggle layout, the synthetic demo cohort, DICOM conversion."""
