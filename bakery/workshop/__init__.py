"""What follows from the config alone: accounts, names, sizing, expiry, content."""
