"""HTTP only: the app factory, auth, and one module per surface translating requests and errors."""
