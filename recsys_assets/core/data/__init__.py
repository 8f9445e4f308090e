"""RetailRocket reader, column contracts, catalogue, cleaning, splits and training data."""
