"""The console's widgets and screens, one module each."""
