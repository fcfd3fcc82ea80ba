"""Small reusable widgets: read-only tables, the banner, metric cards."""
