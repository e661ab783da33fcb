"""Moving accepted predictions to workers, and telling waiters when a prediction changes."""
