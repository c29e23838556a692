"""Command-line entry point: `python -m train region|coords|fit|evaluate|predict`."""
