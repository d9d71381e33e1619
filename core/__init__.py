"""labtui's core layer."""
