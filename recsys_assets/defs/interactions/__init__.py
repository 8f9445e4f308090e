"""Cleaned, sessionised interactions and the temporal train/valid/test split."""
