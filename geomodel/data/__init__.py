"""Reading, validating, cleaning and loading geolocation datasets (CSV + image folder)."""
