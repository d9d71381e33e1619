"""labtui's sessions layer."""
